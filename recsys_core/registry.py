"""One registry for models and one for tasks: a config names both, nothing else is wired by hand.

Adding a model is one folder under `recsys_core/models/` whose `__init__.py` registers the class
(`@register_model("name", task="next_item")`) plus its `config.yaml` and `smoke.yaml`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    tasks: tuple[str, ...]
    folder: Path

    @property
    def default_config(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def smoke_config(self) -> Path:
        return self.folder / "smoke.yaml"


_MODELS: dict[str, ModelEntry] = {}
_TASKS: dict[str, type] = {}


def register_model(name: str, tasks: str | tuple[str, ...]) -> Callable[[type], type]:
    """Class decorator: the model `name` can be trained by the task(s) named in `tasks`."""
    task_names = (tasks,) if isinstance(tasks, str) else tuple(tasks)

    def wrap(cls: type) -> type:
        import inspect

        _MODELS[name] = ModelEntry(name, cls, task_names, Path(inspect.getfile(cls)).resolve().parent)
        return cls

    return wrap


def register_task(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        _TASKS[name] = cls
        cls.task_name = name
        return cls

    return wrap


def _load_builtin() -> None:
    importlib.import_module("recsys_core.tasks")
    for info in pkgutil.iter_modules([str(MODELS_DIR)]):
        if info.ispkg:
            importlib.import_module(f"recsys_core.models.{info.name}")


def get_model(name: str) -> ModelEntry:
    _load_builtin()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(model_names())}")
    return _MODELS[name]


def get_task(name: str) -> type:
    _load_builtin()
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def model_names() -> list[str]:
    _load_builtin()
    return sorted(_MODELS)


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_TASKS)


def build_model(name: str, params: dict[str, Any], **data_dims: Any):
    """The model `name` from its config params plus the dimensions only the data knows (n_items...)."""
    entry = get_model(name)
    return entry.cls(**data_dims, **params)
