"""Recommender models trained on real public data and served to the agents as tools.

A FuxiCTR-style zoo: one folder per model under `recsys_core/models/` (code, `config.yaml`,
`smoke.yaml`), one registry, shared layers, one training loop (`Trainer`), tasks that own data
and evaluation protocols. Public names load on first use (`shoplab_core.lazy`).
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "recsys_core.config": ["ExperimentConfig", "TrainSettings"],
    "recsys_core.registry": ["build_model", "get_model", "get_task", "model_names", "register_model",
                             "register_task", "task_names"],
    "recsys_core.tools": ["RecsysToolkit"],
    "recsys_core.trainer": ["Trainer", "evaluate_run", "load_run"],
})
