"""Local generation with HF transformers (CPU or GPU), several episodes' prompts in one batch.

On CPU, prefill is the cost: 8 prompts of ~600 tokens take ~11 s to read and ~3 s to answer in 32
tokens. Every episode's prompt starts with the same system prompt, so its keys and values are
computed once and shared: a batch is laid out as [shared prefix | left padding | own suffix] with
the padding masked out, and only the suffixes are prefilled. Outputs are identical to plain
batched generation (a test checks it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from agents.llm.base import ChatResult, LLMConfig, LLMError, Message, SamplingConfig
from agents.llm.models import resolve_model
from agents.llm.rendering import render_for_template


class TransformersChat:
    name = "transformers"
    thread_safe = False

    def __init__(self, config: LLMConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.torch = torch
        path = resolve_model(config.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            dtype = getattr(torch, config.dtype) if config.dtype != "auto" else "auto"
            engine_kwargs = {k: v for k, v in config.engine_kwargs.items() if k not in ("prefix_cache",)}
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **engine_kwargs)
        except OSError as exc:
            raise LLMError(f"cannot load model {config.model!r}: {exc}") from exc
        if config.lora_path:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, config.lora_path)
        self.model.to(config.device).eval()
        # Batched prompts are padded on the left so every sequence continues from its last token.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_path = path
        self.prefix_cache_enabled = bool(config.engine_kwargs.get("prefix_cache", True))
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
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
            cached = batch.pop("cached_tokens", 0)
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
                out = self.model.generate(**batch, **gen_kwargs)
            prompt_len = batch["input_ids"].shape[1]
            elapsed = time.perf_counter() - started
            eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.pad_token_id}
            for row, i in enumerate(runnable):
                new = out[row, prompt_len:].tolist()
                n_new = next((j + 1 for j, t in enumerate(new) if t in eos), len(new))
                finish = "length" if n_new == len(new) and (not new or new[-1] not in eos) else "stop"
                text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
                results[i] = ChatResult(text=text, prompt_tokens=len(ids[i]), completion_tokens=n_new,
                                        cached_prompt_tokens=cached, latency_s=elapsed, finish_reason=finish)
        return [r for r in results if r is not None]

    # -- shared-prefix KV cache ------------------------------------------------------
    MIN_PREFIX = 32
    MAX_PREFIXES = 4

    def _layout(self, seqs: list[list[int]]) -> dict[str, Any]:
        torch = self.torch
        prefix = self._shared_prefix(seqs) if self.prefix_cache_enabled else None
        if prefix is None:
            batch = self.tokenizer.pad({"input_ids": seqs}, return_tensors="pt")
            return {k: v.to(self.model.device) for k, v in batch.items()}
        key, kv = prefix
        p = len(key)
        width = max(len(s) - p for s in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = [list(key) + [pad] * (width - (len(s) - p)) + s[p:] for s in seqs]
        mask = [[1] * p + [0] * (width - (len(s) - p)) + [1] * (len(s) - p) for s in seqs]
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer_idx, layer in enumerate(kv.layers):
            n = len(seqs)
            cache.update(layer.keys.expand(n, -1, -1, -1).contiguous(),
                         layer.values.expand(n, -1, -1, -1).contiguous(), layer_idx)
        self.prefix_hits += 1
        device = self.model.device
        return {"input_ids": torch.tensor(input_ids, device=device), "attention_mask": torch.tensor(mask, device=device),
                "past_key_values": cache, "cached_tokens": p}

    def _shared_prefix(self, seqs: list[list[int]]) -> tuple[tuple[int, ...], Any] | None:
        """The longest cached prefix of every sequence, else the batch's common prefix, computed once."""
        shortest = min(len(s) for s in seqs)
        for key in sorted(self._prefixes, key=len, reverse=True):
            if len(key) < shortest and all(tuple(s[:len(key)]) == key for s in seqs):
                self._prefixes.move_to_end(key)
                return key, self._prefixes[key]
        if len(seqs) < 2:
            return None
        p = 0
        while p < shortest - 1 and all(s[p] == seqs[0][p] for s in seqs):
            p += 1
        if p < self.MIN_PREFIX:
            return None
        key = tuple(seqs[0][:p])
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.tensor([list(key)], device=self.model.device), use_cache=True)
        self._prefixes[key] = out.past_key_values
        while len(self._prefixes) > self.MAX_PREFIXES:
            self._prefixes.popitem(last=False)
        return key, out.past_key_values

    def close(self) -> None:
        self.model = None
        self._prefixes.clear()


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
