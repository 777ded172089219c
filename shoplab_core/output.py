"""What the `shoplab` commands print: shoplab's own lines and bars, not the libraries' chatter.

By default third-party warnings, INFO logs (vLLM prints dozens per engine start) and the weight-loading
and dataset-map progress bars of transformers / datasets are silenced; `shoplab --verbose ...` keeps
them. Environment variables a user set themselves win over these defaults. It must run before the
libraries are imported: the CLI imports them inside its commands, after this.
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET_FLAG = "SHOPLAB_QUIET"
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",      # also transformers' "Loading weights" bar (it follows the hub's)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' map / filter / save bars
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore",                # worker processes (vLLM's engine core) start with this
    QUIET_FLAG: "1",                           # read by shoplab's own code: e.g. vLLM's weight-loading bar
}
QUIET_LOGGERS = ("vllm", "transformers", "datasets", "torch", "httpx", "urllib3", "gradio", "peft", "trl",
                 "accelerate", "langchain", "langgraph", "huggingface_hub", "jax", "opensearch", "elastic_transport")
# The project's own packages: their warnings are shown even in quiet mode.
OWN_PACKAGES = ("shoplab_core", "sandbox", "agents", "rewrite", "recsys_core", "training", "ui")


def quiet() -> bool:
    """Whether the command runs quiet (the default of `shoplab`; `--verbose` turns it off)."""
    return os.environ.get(QUIET_FLAG) == "1"


def configure_output(verbose: bool = False) -> None:
    """Quiet third-party output (the default), or leave everything as the libraries print it."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore")
    for package in OWN_PACKAGES:  # later filters are checked first
        warnings.filterwarnings("default", module=rf"{package}(\.|$)")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
