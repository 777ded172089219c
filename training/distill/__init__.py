"""Trajectory distillation of a shopping agent: teacher episodes -> SFT / step-GRPO data -> a student
trained with the TRL stages of `training/`, then GRPO over whole sandbox episodes, then evaluated."""

from training.distill.data import build_distill_datasets
from training.distill.pipeline import DistillConfig, DistillPipeline, StudentAgentSettings

__all__ = ["DistillConfig", "DistillPipeline", "StudentAgentSettings", "build_distill_datasets"]
