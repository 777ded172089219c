"""Where tensors live and in which precision: one reading of `device:` and `dtype:` settings.

Every setting that places a model takes the same strings: `auto` (CUDA when present, else the
CPU), `cpu`, `cuda`, `cuda:N`, `mps`; and for precision `auto` (bfloat16 on a CUDA device that
supports it, float32 otherwise), `float32`, `bfloat16`, `float16`. On a machine without a GPU
`auto` is exactly the old behaviour: CPU, float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on first use: importing shoplab_core stays cheap
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
# setting → torch attribute
DTYPES: dict[str, str] = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def _cuda_unavailable(spec: str) -> ValueError:
    import torch

    built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}, but no GPU is visible"
    return ValueError(f"device {spec!r} asks for CUDA, but torch {torch.__version__} is built {built}; "
                      "use device: auto (CUDA when present, else CPU) or device: cpu")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device a `device:` setting names (see the module docstring); ValueError for a setting
    that is not one of them or names hardware this machine does not have."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index: int | None = None
        if text != "cuda":
            suffix = text.split(":", 1)[1]
            if not suffix.isdigit():
                raise ValueError(f"device {spec!r}: a CUDA device is `cuda` or `cuda:N` with N a GPU index")
            index = int(suffix)
        if not torch.cuda.is_available():
            raise _cuda_unavailable(str(spec))
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {spec!r}: Apple's MPS backend is not available on this machine; "
                             "use device: auto or device: cpu")
        return torch.device("mps")
    raise ValueError(f"unknown device {spec!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def _bf16_supported(device: torch.device) -> bool:
    import torch

    if device.type != "cuda":
        return False
    try:
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):
        return False


def resolve_dtype(spec: str | torch.dtype | None = "auto", device: str | torch.device | None = "auto") -> torch.dtype:
    """The torch dtype a `dtype:` setting names on `device` (a setting or a torch.device): `auto` is
    bfloat16 on a CUDA device with bf16 support and float32 everywhere else."""
    import torch

    if isinstance(spec, torch.dtype):
        if spec not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype {spec} is not a model precision; choose float32, bfloat16 or float16")
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text.startswith("torch."):
        text = text[len("torch."):]
    if text == "auto":
        return torch.bfloat16 if _bf16_supported(resolve_device(device)) else torch.float32
    if text in DTYPES:
        return getattr(torch, DTYPES[text])
    raise ValueError(f"unknown dtype {spec!r}; choose one of auto, float32, bfloat16, float16")


def dtype_name(dtype: torch.dtype) -> str:
    """`float32`, `bfloat16`, ...: the name engines such as vLLM take."""
    return str(dtype).removeprefix("torch.")


def module_device(module: Any) -> torch.device:
    """The device of a module's first parameter (or buffer, if it has none); the CPU for a module
    without either. Inputs built for a model go there."""
    import torch

    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
