"""Experiment configs: one YAML per run, `model` + `task` + `data` + `model_params` + `train`.

Models' own folders hold a `config.yaml` (the real experiment) and a `smoke.yaml` (seconds, run by
the tests). A config may `base:` another file and override any key; the CLI overrides with
`--set train.epochs=3`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoplab_core.config import load_config


@dataclass
class TrainSettings:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    scheduler: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.1
    seed: int = 0
    eval_every: int = 1  # epochs
    patience: int = 0  # epochs without improvement before stopping; 0 = never stop early
    max_steps: int = 0  # 0 = no limit (smoke configs set it)
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    mixed_precision: str = "no"  # accelerate: no | fp16 | bf16 (GPUs)
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda | cuda:N (shoplab_core.devices)
    progress: bool = True


@dataclass
class ExperimentConfig:
    model: str
    task: str
    data: dict[str, Any] = field(default_factory=dict)
    model_params: dict[str, Any] = field(default_factory=dict)
    train: TrainSettings = field(default_factory=TrainSettings)
    task_params: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "runs/recsys/run"
    source: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "") -> ExperimentConfig:
        return load_config(cls, {k: v for k, v in raw.items() if k != "base"}, flags={"source": source},
                           where=source or None)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
        return load_config(cls, path, overrides=overrides, flags={"source": str(path)})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source")
        return out
