"""The lowest layer of shoplab: the one config system, device/dtype resolution and model loading.

Every other package may import it; it imports nothing of shoplab.
"""

from shoplab_core.config import ConfigError, cli_config, load_config
from shoplab_core.devices import module_device, resolve_device, resolve_dtype
from shoplab_core.errors import DEFAULT_DATA_DIR, UserError
from shoplab_core.models import (
    ModelRefError,
    ModelSource,
    ensure_pad_token,
    load_causal_lm,
    load_tokenizer,
    resolve_model_ref,
    resolve_model_source,
)

__all__ = ["DEFAULT_DATA_DIR", "UserError", "ConfigError", "ModelRefError", "ModelSource", "cli_config", "ensure_pad_token", "load_causal_lm",
           "load_config", "load_tokenizer", "module_device", "resolve_device", "resolve_dtype", "resolve_model_ref",
           "resolve_model_source"]
