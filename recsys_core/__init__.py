"""Recommender models trained on real public data and served to the agents as tools.

A FuxiCTR-style zoo: one folder per model under `recsys_core/models/` (code, `config.yaml`,
`smoke.yaml`), one registry, shared layers, one training loop (`Trainer`), tasks that own data
and evaluation protocols.
"""

from recsys_core.config import ExperimentConfig, TrainSettings
from recsys_core.registry import (
    build_model,
    get_model,
    get_task,
    model_names,
    register_model,
    register_task,
    task_names,
)
from recsys_core.tools import RecsysToolkit
from recsys_core.trainer import Trainer, evaluate_run, load_run

__all__ = [
    "ExperimentConfig", "RecsysToolkit", "TrainSettings", "Trainer", "build_model", "evaluate_run", "get_model", "get_task",
    "load_run", "model_names", "register_model", "register_task", "task_names",
]
