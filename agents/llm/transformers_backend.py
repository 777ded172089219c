"""Local generation with HF transformers (CPU or GPU: `device: auto`), several episodes' prompts in one batch.

On CPU, prefill is the cost: 8 prompts of ~600 tokens take ~11 s to read and ~3 s to answer in 32
tokens. Every episode's prompt starts with the same system prompt and, from its second turn on,
with its own previous prompt and answer. Those keys and values are kept (`PrefixKVStore`) and each
row of a batch resumes from its longest stored prefix: the batch is laid out as
[left pad | stored prefix | pad | new tokens] with the pads masked out, and only the new tokens are
read. Outputs match plain batched generation (a test checks it).
"""

from __future__ import annotations

import time
from typing import Any

from agents.llm.base import ChatResult, LLMConfig, LLMError, Message, SamplingConfig
from agents.llm.chat_templates import resolve_chat_template
from agents.llm.kv_store import PrefixKVStore
from agents.llm.models import resolve_local_model
from agents.llm.rendering import render_for_template


class TransformersChat:
    name = "transformers"
    thread_safe = False

    def __init__(self, config: LLMConfig):
        import torch

        from shoplab_core.models import ModelRefError, load_causal_lm

        self.config = config
        self.torch = torch
        path, adapter = resolve_local_model(config)
        engine_kwargs = {k: v for k, v in config.engine_kwargs.items()
                         if k not in ("prefix_cache", "kv_cache_memory_bytes", "trust_remote_code")}
        try:
            # Batched prompts are padded on the left so every sequence continues from its last token.
            self.model, self.tokenizer = load_causal_lm(
                path, device=config.device, dtype=config.dtype, adapter=adapter, padding_side="left",
                trust_remote_code=bool(config.engine_kwargs.get("trust_remote_code", False)), eval_mode=True,
                model_kwargs=engine_kwargs)
        except (OSError, ModelRefError, ValueError) as exc:  # ValueError: a device/dtype this machine lacks
            raise LLMError(f"cannot load model {config.model!r}: {exc}") from exc
        template = resolve_chat_template(config.chat_template)
        if template:
            self.tokenizer.chat_template = template
        self.model_path = path
        self.prefix_cache_enabled = bool(config.engine_kwargs.get("prefix_cache", True))
        self.kv_store = PrefixKVStore(max_bytes=int(config.engine_kwargs.get("kv_cache_memory_bytes", 1 << 30)))
        self.prefix_hits = 0

    def prompt_text(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        return render_for_template(self.tokenizer, messages, tools, self.config.tool_format)

    def chat_batch(self, conversations: list[list[Message]], tools: list[dict[str, Any]] | None,
                   sampling: SamplingConfig) -> list[ChatResult]:
        torch = self.torch
        started = time.perf_counter()
        texts = [self.prompt_text(m, tools) for m in conversations]
        budget = self.config.max_model_len - sampling.max_new_tokens
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        results: list[ChatResult | None] = [None] * len(texts)
        runnable = []
        for i, seq in enumerate(ids):
            if len(seq) > budget:
                results[i] = ChatResult(text="", prompt_tokens=len(seq), finish_reason="length",
                                        error=f"prompt of {len(seq)} tokens exceeds the context budget of {budget}")
            else:
                runnable.append(i)
        if runnable:
            batch = self._layout([ids[i] for i in runnable])
            cached = batch.pop("cached_tokens")
            gen_kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens,
                                          "pad_token_id": self.tokenizer.pad_token_id}
            if sampling.greedy:
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
            if sampling.stop:
                gen_kwargs.update(stop_strings=sampling.stop, tokenizer=self.tokenizer)
            with torch.inference_mode():
                out = self.model.generate(**batch, **gen_kwargs, return_dict_in_generate=True)
            prompt_len = batch["input_ids"].shape[1]
            answers: list[list[int]] = []
            elapsed = time.perf_counter() - started
            eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.pad_token_id}
            for row, i in enumerate(runnable):
                new = out.sequences[row, prompt_len:].tolist()
                n_new = next((j + 1 for j, t in enumerate(new) if t in eos), len(new))
                answers.append(new[:n_new])
                finish = "length" if n_new == len(new) and (not new or new[-1] not in eos) else "stop"
                text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
                results[i] = ChatResult(text=text, prompt_tokens=len(ids[i]), completion_tokens=n_new,
                                        cached_prompt_tokens=cached[row], latency_s=elapsed, finish_reason=finish)
            if self.prefix_cache_enabled and out.past_key_values is not None:
                self._remember(batch, out.past_key_values, [ids[i] for i in runnable], answers)
        return [r for r in results if r is not None]

    # -- KV reuse across prompts ---------------------------------------------------------
    def _layout(self, seqs: list[list[int]]) -> dict[str, Any]:
        """[left pad | stored KV of row's prefix | pad | tokens to read]: each row resumes where its cache ends."""
        torch = self.torch
        device = self.model.device
        n = len(seqs)
        hits = [self.kv_store.lookup(s) for s in seqs] if self.prefix_cache_enabled else [(0, None)] * n
        if self.prefix_cache_enabled and n > 1 and not any(c for c, _ in hits):
            hits = self._read_common_prefix(seqs) or hits
        cached = [c for c, _ in hits]
        width_cached = max(cached)
        if width_cached == 0:
            batch = self.tokenizer.pad({"input_ids": seqs}, return_tensors="pt")
            return {**{k: v.to(device) for k, v in batch.items()}, "cached_tokens": cached}
        width_new = max(len(s) - c for s, c in zip(seqs, cached, strict=True))
        pad = self.tokenizer.pad_token_id
        input_ids, mask = [], []
        for s, c in zip(seqs, cached, strict=True):
            fresh = len(s) - c
            input_ids.append([pad] * (width_cached - c) + s[:c] + [pad] * (width_new - fresh) + s[c:])
            mask.append([0] * (width_cached - c) + [1] * c + [0] * (width_new - fresh) + [1] * fresh)
        from transformers import DynamicCache

        cache = DynamicCache()
        first = next(kv for _, kv in hits if kv is not None)
        sample_k, sample_v = first[0]
        for layer_idx in range(len(first)):
            keys = sample_k.new_zeros((n, sample_k.shape[1], width_cached, sample_k.shape[3]))
            values = sample_v.new_zeros((n, sample_v.shape[1], width_cached, sample_v.shape[3]))
            for row, (c, kv) in enumerate(hits):
                if c:
                    keys[row, :, width_cached - c:] = kv[layer_idx][0][0, :, :c]
                    values[row, :, width_cached - c:] = kv[layer_idx][1][0, :, :c]
            cache.update(keys, values, layer_idx)
        self.prefix_hits += 1
        return {"input_ids": torch.tensor(input_ids, device=device),
                "attention_mask": torch.tensor(mask, device=device), "past_key_values": cache, "cached_tokens": cached}

    def _read_common_prefix(self, seqs: list[list[int]]) -> list[tuple[int, Any]] | None:
        """A new batch with nothing stored: read the prefix all its prompts share (the system prompt) once."""
        shortest = min(len(s) for s in seqs)
        p = 0
        while p < shortest - 1 and all(s[p] == seqs[0][p] for s in seqs):
            p += 1
        if p < self.kv_store.min_tokens:
            return None
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.tensor([seqs[0][:p]], device=self.model.device), use_cache=True)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self.kv_store.put(seqs[0][:p], kv)
        return [(p, kv)] * len(seqs)

    def _remember(self, batch: dict[str, Any], cache: Any, seqs: list[list[int]], new: list[list[int]]) -> None:
        """Store what each row has read: its prompt and its answer but the last token (not yet fed back)."""
        torch = self.torch
        width = batch["input_ids"].shape[1]
        for row, (seq, answer) in enumerate(zip(seqs, new, strict=True)):
            kept = max(len(answer) - 1, 0)
            idx = torch.cat([batch["attention_mask"][row].nonzero().squeeze(-1),
                             torch.arange(width, width + kept, device=self.model.device)])
            kv = [(layer.keys[row:row + 1, :, idx].clone(), layer.values[row:row + 1, :, idx].clone())
                  for layer in cache.layers]
            self.kv_store.put(seq + answer[:kept], kv)

    def close(self) -> None:
        self.model = None
        self.kv_store.clear()


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
