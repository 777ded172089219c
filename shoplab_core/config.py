"""The one config system of shoplab: YAML files, `--set key=value` overrides and CLI flags → a typed dataclass.

Every config (agent runs, LLM backends, the demo, training stages, the rewrite and distillation
pipelines, recommender experiments) is a plain dataclass, loaded by `load_config`:

    dataclass defaults  <  YAML file (with `base:` inheritance)  <  --set key=value  <  explicit CLI flags

* A YAML file may name `base: other.yaml` (relative to itself); the file is merged over its base,
  recursively. Mappings merge key by key, anything else (lists included) is replaced.
* Run configs (`configs/agents/*.yaml`, `configs/demo/*.yaml`) have `llm:` / `agent:` / `demo:`
  sections that may share one file or stand alone: `section="agent"` reads the `agent:` section of a
  file that has any of these sections, and the whole file otherwise.
* `--set a.b=value` (repeatable) is the one override dialect of every command: the value is parsed as
  a YAML scalar or flow list/mapping (`3`, `1e-4`, `true`, `null`, `[a, b]`, `{r: 8}`).
* A CLI flag is merged only when the user passed it: typer options default to `None` for "not given",
  and `None` flags are dropped, so a flag's default never overrides the YAML.
* Unknown keys are errors naming the key (dotted) and the file; so are type errors.

Why these two libraries:
* **OmegaConf** parses and merges: YAML files, dotted `key=value` lists (`from_dotlist`, values
  parsed as YAML, `1e-4` a float unlike PyYAML's safe_load) and deep merges. It is the
  well-kept core of Hydra, small, and does exactly this part; we use its untyped containers only.
* **pydantic** (`TypeAdapter` over the existing stdlib dataclasses) validates the merged mapping:
  `Literal`s, unions, `Optional`s, nested dataclasses, lists and dicts all type-check and coerce, and
  the dataclasses' own `__post_init__` checks still run. The repo already depends on pydantic.
  OmegaConf's structured configs cannot express unions of containers (`str | list[str]`) or Literals,
  hence pydantic for the typing and OmegaConf only for the composition.

This module imports nothing of shoplab (typer only inside the CLI helpers).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shoplab_core.errors import DEFAULT_DATA_DIR, UserError

T = TypeVar("T")

RUN_SECTIONS = ("llm", "agent", "demo")
SET_HELP = "Override a config key, e.g. --set train.epochs=3 (repeatable; the value is parsed as YAML)."


class ConfigError(UserError, ValueError):
    """A config that cannot be loaded: a missing file, an unknown key, a bad value or override."""


# --------------------------------------------------------------------------------------------- files


def read_yaml(path: str | Path, resolve: bool = False) -> dict[str, Any]:
    """A YAML mapping with its `base:` chain merged in (the file's keys over its base's).

    `${...}` interpolations stay as written unless `resolve`: `load_config` resolves them once merged."""
    return _to_dict(_load_with_base(Path(path), ()), str(path), resolve)


def _load_with_base(path: Path, seen: tuple[Path, ...]) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: `base:` cycle through {', '.join(str(p) for p in seen)}")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError, OmegaConf's grammar errors, an unreadable file
        raise ConfigError(f"{path}: cannot read the YAML: {exc}") from exc
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: a config is a mapping, not a {type(node).__name__}")
    if "base" not in node:
        return node
    base = node.pop("base")
    if base is None:
        return node
    if not isinstance(base, str):
        raise ConfigError(f"{path}: `base` must be a file name, not {base!r}")
    parent = _load_with_base((path.parent / base), seen + (resolved,))
    return OmegaConf.merge(parent, node)


# ----------------------------------------------------------------------------------------- overrides


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """`["a.b=3", "c=[x, y]"]` → the nested mapping `{"a": {"b": 3}, "c": ["x", "y"]}` (OmegaConf's dotlist)."""
    items = list(items or [])
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. --set train.epochs=3)")
    try:
        return _to_dict(OmegaConf.from_dotlist([i.strip() for i in items]), "--set", resolve=False)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"--set: {exc}") from exc


def split_sections(overrides: Iterable[str] | None, sections: Iterable[str]) -> dict[str, list[str]]:
    """`--set llm.model=x --set agent.max_steps=5` → {"llm": ["model=x"], "agent": ["max_steps=5"]}.

    For commands that load several configs: every key must start with one of `sections`."""
    out: dict[str, list[str]] = {s: [] for s in sections}
    for item in overrides or []:
        head, _, rest = item.strip().partition(".")
        if head not in out or not rest:
            raise ConfigError(f"--set {item!r}: keys start with one of {', '.join(out)} (e.g. --set "
                              f"{next(iter(out))}.KEY=VALUE)")
        out[head].append(rest)
    return out


def flags_mapping(flags: Mapping[str, Any] | None) -> dict[str, Any]:
    """Explicit CLI flags as a nested mapping: dotted names nest, `None` (not given) is dropped."""
    out: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _plain(value)
    return out


# ------------------------------------------------------------------------------------------- loading


def load_config(cls: type[T], source: str | Path | Mapping[str, Any] | None = None, section: str | None = None,
                overrides: Iterable[str] | None = (), flags: Mapping[str, Any] | None = None,
                sections: tuple[str, ...] = RUN_SECTIONS, where: str | None = None, label: str = "key(s)") -> T:
    """The `cls` dataclass from defaults < `source` < `overrides` (`key=value`) < `flags` (non-None only).

    `source` is a YAML file (`base:` inheritance applies) or an in-memory mapping; `section` picks one
    section of a file that has any of `sections` at its top level (a file without sections is the
    section alone). Keys of `overrides` and `flags` are relative to the section; `where` names the
    source in errors (default: the file's path), `label` its top-level keys ("unknown {label} [...]").
    Raises `ConfigError`.
    """
    where = where or (str(source) if isinstance(source, (str, Path)) else "the config")
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        raw = _plain(dict(source))
    else:
        raw = read_yaml(source)
    if section is not None and any(name in raw for name in sections):
        raw = raw.get(section) or {}
        where = f"{where} [{section}:]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: the `{section}` section must be a mapping")
    layers = [defaults_of(cls), raw, parse_overrides(overrides), flags_mapping(flags)]
    try:
        merged = OmegaConf.merge(*[OmegaConf.create(layer) for layer in layers])
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return validate(cls, _to_dict(merged, where), where, label)


def validate(cls: type[T], raw: Mapping[str, Any], where: str = "the config", label: str = "key(s)") -> T:
    """`raw` as a `cls`: unknown keys rejected (named with their dotted path), types checked by pydantic."""
    from pydantic import ValidationError

    _reject_unknown(cls, raw, where, "", label)
    try:
        return _adapter(cls).validate_python(dict(raw))
    except ValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(_describe(e) for e in exc.errors(include_url=False))) from exc
    except (TypeError, ValueError) as exc:  # a __post_init__ check
        raise ConfigError(f"{where}: {exc}") from exc


def defaults_of(cls: type) -> dict[str, Any]:
    """The defaults of a dataclass's fields, nested dataclasses as mappings; required fields are absent."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = _plain(value)
    return out


@functools.cache
def _adapter(cls: type):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        return f"`{key}` is required"
    msg = error["msg"].removeprefix("Value error, ")
    if not key:
        return msg
    return f"`{key}`: {msg} (got {error.get('input')!r})"


def _reject_unknown(cls: type, raw: Any, where: str, prefix: str, label: str = "key(s)") -> None:
    if not isinstance(raw, Mapping):
        return  # pydantic reports the type
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        what = f"{prefix.rstrip('.')} settings" if prefix else label
        keys = ", ".join(prefix + k for k in unknown)
        raise ConfigError(f"{where}: unknown {what} {unknown} ({keys}); known: {', '.join(known)}")
    hints = _hints(cls)
    for name, value in raw.items():
        inner = _dataclass_in(hints.get(name))
        if inner is not None and isinstance(value, Mapping):
            _reject_unknown(inner, value, where, f"{prefix}{name}.")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: pydantic will say more
        return {}


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass of a field typed `D` or `D | None`."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        return found[0] if len(found) == 1 else None
    return None


def _plain(value: Any) -> Any:
    """Values OmegaConf takes: dataclasses → dicts, tuples → lists, paths → str, enums → their value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _to_dict(node: Any, where: str, resolve: bool = True) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(node, resolve=resolve)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# ------------------------------------------------------------------------------------------- the CLI


def config_option(default: Path | None = None, help: str = "A YAML config; --set and flags override it."):
    """`--config FILE` for a typer command (`...` as default makes it required)."""
    import typer

    return typer.Option(default, "--config", help=help)


def data_dir_option(help: str = "The built sandbox."):
    """`--data-dir DIR` of every command that reads or writes a sandbox; `runs/sandbox` (where `make run`
    builds it) unless given."""
    import typer

    return typer.Option(Path(DEFAULT_DATA_DIR), "--data-dir", help=help, show_default=True)


def set_option(help: str = SET_HELP):
    """The repeatable `--set key=value` of every command."""
    import typer

    return typer.Option(None, "--set", help=help)


def cli_config(cls: type[T], source: str | Path | Mapping[str, Any] | None = None, section: str | None = None,
               overrides: Iterable[str] | None = (), flags: Mapping[str, Any] | None = None,
               param_hint: str = "--config/--set", **kwargs: Any) -> T:
    """`load_config` for a typer command: a bad config is a usage error naming the option (exit code 2)."""
    import typer

    try:
        return load_config(cls, source, section, overrides, flags, **kwargs)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from exc
