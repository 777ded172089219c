"""Build the configured backend and put it behind a thread-safe, batching front."""

from __future__ import annotations

from agents.llm.base import ChatLLM, LLMConfig
from agents.llm.batching import BatchingChat


def make_backend(config: LLMConfig) -> ChatLLM:
    from agents.llm.models import with_fallback

    if config.backend != "openai":  # a served model's name is the server's business
        config = with_fallback(config)
    if config.backend == "transformers":
        from agents.llm.transformers_backend import TransformersChat

        return TransformersChat(config)
    if config.backend == "vllm":
        from agents.llm.vllm_backend import VLLMChat

        return VLLMChat(config)
    if config.backend == "openai":
        from agents.llm.openai_backend import OpenAIChat

        return OpenAIChat(config)
    raise ValueError(f"unknown backend {config.backend!r}")


def make_llm(config: LLMConfig) -> BatchingChat:
    return BatchingChat(make_backend(config))
