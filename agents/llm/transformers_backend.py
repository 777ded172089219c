"""Local generation with HF transformers (CPU or GPU), several episodes' prompts in one batch."""

from __future__ import annotations

import time
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
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **config.engine_kwargs)
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
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in runnable]}, return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
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
                                        latency_s=elapsed, finish_reason=finish)
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.model = None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
