"""Trajectory distillation of a shopping agent: teacher episodes -> SFT / step-GRPO data -> a student
trained with the TRL stages of `training/`, then GRPO over whole sandbox episodes, then evaluated."""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "training.distill.data": ["build_distill_datasets"],
    "training.distill.pipeline": ["DistillConfig", "DistillPipeline", "StudentAgentSettings"],
})
