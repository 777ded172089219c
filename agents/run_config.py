"""Reading one section of a run config YAML (`llm:` and `agent:` may share a file, or stand alone)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

RUN_SECTIONS = ("llm", "agent", "demo")


def read_section(path: str | Path, section: str, config_cls: type) -> dict[str, Any]:
    """The keys of `section` for `config_cls`; a file without sections is that section alone."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if any(name in raw for name in RUN_SECTIONS):
        raw = dict(raw.get(section) or {})
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        label = "LLM" if section == "llm" else section
        raise ValueError(f"{path}: unknown {label} config keys {unknown}; known: {sorted(known)}")
    return raw
