"""Nested dataclass configs from YAML mappings, with unknown keys named in the error."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any


def build_dataclass(cls, raw: dict[str, Any], where: str = ""):
    """`cls(**raw)`, building nested dataclass fields from nested mappings."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where.rstrip('.') or 'the config'} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where or 'the config'}; known: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        factory = known[name].default_factory
        default = factory() if callable(factory) else None
        kwargs[name] = build_dataclass(type(default), value, f"{where}{name}.") if is_dataclass(default) and \
            isinstance(value, dict) else value
    return cls(**kwargs)
