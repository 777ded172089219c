"""Where models come from: the bundled SmolLM2-135M-Instruct, any HF folder, a trained stage folder,
or a hub name.

The resolution itself lives in `shoplab_core.models` (one resolver for agents, rewriting and
training); this module keeps the agents' names for it and reports failures as `LLMError`.
"""

from __future__ import annotations

from pathlib import Path

from agents.llm.base import LLMError
from shoplab_core.errors import print_warning
from shoplab_core.models import (
    DEFAULT_MODEL_ALIAS,
    ModelRefError,
    default_model_dir,
    missing_shipped_model,
    resolve_model_ref,
    resolve_model_source,
    shoplab_home,
)
from shoplab_core.models import bundled_gguf as _bundled_gguf
from shoplab_core.models import prepare_default_model as _prepare_default_model

__all__ = ["DEFAULT_MODEL_ALIAS", "bundled_gguf", "default_model_dir", "prepare_default_model", "resolve_model",
           "shoplab_home"]


def bundled_gguf() -> Path:
    try:
        return _bundled_gguf()
    except ModelRefError as exc:
        raise LLMError(str(exc)) from exc


def prepare_default_model(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Convert the bundled GGUF into an HF folder (fp32 safetensors + tokenizer); idempotent."""
    try:
        return _prepare_default_model(out_dir, force=force)
    except ModelRefError as exc:
        raise LLMError(str(exc)) from exc


def resolve_local_model(config) -> tuple[str, str | None]:
    """(weights to load, LoRA adapter or None) for a local backend: `model` may itself be an adapter (a
    shipped student, a LoRA-only stage folder), and `lora_path`, when set, is the adapter to serve."""
    try:
        source = resolve_model_source(config.model)
    except ModelRefError as exc:
        raise LLMError(str(exc)) from exc
    return source.base, config.lora_path or source.adapter


def with_fallback(config):
    """`config`, or, when it names a shipped model this install lacks and has a `fallback_model`, a copy
    on the fallback, with a banner on stderr saying so (a missing default must not look like a working one)."""
    from dataclasses import replace

    reason = missing_shipped_model(config.model)
    if reason is None or not config.fallback_model:
        return config
    print_warning(f"{reason}; using {config.fallback_model} instead, which does far worse "
                  "(docs/results.md has both).")
    return replace(config, model=config.fallback_model)


def resolve_model(name: str) -> str:
    """The path or hub name a backend should load for `name` (`shoplab_core.models.resolve_model_ref`:
    the default alias is prepared on demand, a stage folder gives its merged model)."""
    try:
        return resolve_model_ref(name)
    except ModelRefError as exc:
        raise LLMError(str(exc)) from exc
