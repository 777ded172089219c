"""Experiment configs: one YAML per run, `model` + `task` + `data` + `model_params` + `train`.

Models' own folders hold a `config.yaml` (the real experiment) and a `smoke.yaml` (seconds, run by
the tests). A config may `base:` another file and override any key; the CLI overrides with
`--set train.epochs=3`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


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
        raw = copy.deepcopy(raw)
        unknown = set(raw) - {f.name for f in fields(cls)} - {"base"}
        if unknown:
            raise ValueError(f"{source or 'config'}: unknown keys {sorted(unknown)}")
        for key in ("model", "task"):
            if not raw.get(key):
                raise ValueError(f"{source or 'config'}: `{key}` is required")
        train_raw = raw.pop("train", {}) or {}
        bad = set(train_raw) - {f.name for f in fields(TrainSettings)}
        if bad:
            raise ValueError(f"{source or 'config'}: unknown train settings {sorted(bad)}")
        raw.pop("base", None)
        return cls(**raw, train=TrainSettings(**train_raw), source=source)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
        raw = load_yaml_with_base(Path(path))
        for item in overrides or []:
            apply_override(raw, item)
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source")
        return out


def load_yaml_with_base(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config is a mapping")
    base = raw.get("base")
    if base:
        parent = load_yaml_with_base((path.parent / base).resolve())
        raw = deep_merge(parent, {k: v for k, v in raw.items() if k != "base"})
    return raw


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`train.epochs=3` or `data.path=/x`: the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not KEY=VALUE")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)
