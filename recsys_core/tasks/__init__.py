"""Tasks: what a batch is and how a model is judged. Every module here registers its task(s)."""

import importlib
import pkgutil
from pathlib import Path

from recsys_core.tasks.base import Task

for _info in pkgutil.iter_modules([str(Path(__file__).resolve().parent)]):
    if _info.name != "base":
        importlib.import_module(f"recsys_core.tasks.{_info.name}")

__all__ = ["Task"]
