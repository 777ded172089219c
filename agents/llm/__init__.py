"""One chat interface over vLLM, transformers and OpenAI-compatible endpoints, selected by config."""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "agents.llm.base": ["BACKENDS", "ChatLLM", "ChatResult", "LLMConfig", "LLMError", "SamplingConfig"],
    "agents.llm.batching": ["BatchingChat"],
    "agents.llm.factory": ["make_llm"],
    "agents.llm.models": ["DEFAULT_MODEL_ALIAS", "default_model_dir", "prepare_default_model", "resolve_model"],
})
