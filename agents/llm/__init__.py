"""One chat interface over vLLM, transformers and OpenAI-compatible endpoints, selected by config."""

from agents.llm.base import BACKENDS, ChatLLM, ChatResult, LLMConfig, LLMError, SamplingConfig
from agents.llm.batching import BatchingChat
from agents.llm.factory import make_llm
from agents.llm.models import DEFAULT_MODEL_ALIAS, default_model_dir, prepare_default_model, resolve_model

__all__ = ["BACKENDS", "DEFAULT_MODEL_ALIAS", "BatchingChat", "ChatLLM", "ChatResult", "LLMConfig", "LLMError",
           "SamplingConfig", "default_model_dir", "make_llm", "prepare_default_model", "resolve_model"]
