"""One chat interface over every LLM backend, and the config that selects one.

Backends take a *batch* of conversations: local engines (transformers, vLLM) generate them
together, HTTP backends send them concurrently. Episodes running in parallel threads reach a
local engine through `BatchingChat`, which gathers their requests into such batches.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shoplab_core.config import load_config

Message = dict[str, Any]


@dataclass
class SamplingConfig:
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 192
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class LLMConfig:
    """What to run and where. `model` is a hub name, an HF folder, or the alias of the bundled default."""

    backend: str = "transformers"  # transformers | vllm | openai
    model: str = "smollm2-135m-instruct"
    base_url: str | None = None  # openai: e.g. http://localhost:8000/v1 (env OPENAI_BASE_URL otherwise)
    api_key_env: str = "OPENAI_API_KEY"
    # shoplab_core.devices: `auto` = CUDA (bfloat16 where supported) when present, else CPU float32.
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (transformers; vLLM's build picks its device)
    max_batch_size: int = 8
    max_model_len: int = 8192
    lora_path: str | None = None  # a PEFT adapter folder; vLLM serves it through LoRARequest
    # When `model` is a shipped model (shoplab-student) this install lacks, load this instead, with a banner.
    fallback_model: str | None = None
    # text: ShoppingBench's <tool_call> format described in the system prompt (works for any model);
    # native: tools passed to the chat template / API and tool calls returned as structures.
    tool_format: str = "text"
    # A chat template other than the model's own: `tool` (agents.llm.chat_templates: Hermes tool calls
    # on ChatML, what distilled SmolLM2 students are trained with) or a path to a .jinja file.
    chat_template: str | None = None
    max_retries: int = 4
    timeout_s: float = 120.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown LLM backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.tool_format not in ("text", "native"):
            raise ValueError(f"tool_format must be 'text' or 'native', not {self.tool_format!r}")

    @classmethod
    def from_yaml(cls, path: str | Path, **flags: Any) -> LLMConfig:
        """The `llm:` section of a run config (or the whole file); non-None `flags` override it."""
        return load_config(cls, path, "llm", flags=flags)

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "EMPTY")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


BACKENDS = ("transformers", "vllm", "openai")


@dataclass
class ChatResult:
    text: str
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI-style, when the backend returns structures
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    error: str | None = None  # the backend failed for this request; text is empty


class ChatLLM(Protocol):
    name: str
    config: LLMConfig
    # True when chat() may be called from many threads at once (HTTP clients); local engines are
    # driven one batch at a time through BatchingChat instead.
    thread_safe: bool

    def chat_batch(self, conversations: list[list[Message]], tools: list[dict[str, Any]] | None,
                   sampling: SamplingConfig) -> list[ChatResult]:
        ...

    def close(self) -> None:
        ...


class LLMError(RuntimeError):
    """The LLM backend cannot serve (bad config, unreachable endpoint, model not found)."""
