"""Tools declared once: a `Toolkit` is a class whose `@tool` methods are the tools an agent calls.

Learned from tau2-bench's `@is_tool` methods. One method is one tool:

    class EchoTools(Toolkit):
        group = "demo"

        @tool("read")
        def echo(self, env: Episode, text: str, times: int = 1) -> str:
            '''Repeat a text.'''
            return text * times

- its **name** is the method's name, its **kind** (`read` looks, `write` changes the episode) is the
  decorator's argument, its **description** (what the LLM reads) is the docstring's first paragraph;
- its **arguments** are the signature: either one parameter typed with a `ToolArgs` model (when the
  arguments need validators of their own), or plain typed parameters, from which a strict pydantic
  model is built (`Annotated[int, Field(description=...)]` documents a parameter);
- a parameter named `env` receives the episode (an `Episode`: the `ShoppingEnv`) the call runs in, so one toolkit
  instance serves every episode in every thread: per-episode state lives in the episode.

From that declaration everything else is derived: `ToolSpec.openai_schema()` (OpenAI tool JSON),
`describe_tools` (the prompt's tool text), `sandbox.server` (HTTP routes), `trl_environment_class`
(TRL's `environment_factory`) and the demo's tool list. A tool returns data (compact JSON is the
observation), a plain string (the observation), or `ToolOutput(observation, data)`. A problem the
agent can fix is raised as `ToolError(message, kind)`; it becomes the step's error, never an
exception out of the episode.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo

from sandbox.data_model import ToolKind


class Episode(Protocol):
    """What a tool may use of the episode it runs in (`ShoppingEnv` is the one implementation).

    Declared here rather than imported, so that toolkits depend on this module only and the
    environment, which dispatches to them, stays the one module above both.
    """

    world: Any
    state: Any  # EpisodeState: steps, done, recommended, recommend_calls, cart, history
    max_description_chars: int | None

    def search(self, text: str, request: Any) -> Any: ...

    def cart_summary(self) -> dict[str, Any]: ...

_TOOL_ATTR = "__shoplab_tool__"


class ToolArgs(BaseModel):
    """Base of every tool's arguments: unknown parameters are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ErrorKind(str, Enum):
    """Why a tool call failed; HTTP status and UI rendering follow from it, never from the text."""

    invalid_arguments = "invalid_arguments"  # malformed JSON, wrong types, out-of-range values
    unknown_tool = "unknown_tool"  # not among the episode's tools
    not_found = "not_found"  # a product, shop or cart line that does not exist
    rejected = "rejected"  # a valid call the rules refuse (cart limits, an uncomputable expression)
    episode_over = "episode_over"  # the episode ended (terminate or the step limit)
    unavailable = "unavailable"  # a plug-in whose backing service is missing or failed to load
    internal = "internal"  # the engine or a plug-in failed: not the caller's fault

    @property
    def http_status(self) -> int:
        return {ErrorKind.internal: 500, ErrorKind.unavailable: 503, ErrorKind.not_found: 404}.get(self, 422)


class ToolError(Exception):
    """A problem with a tool call that the agent can fix; its message is the observation."""

    def __init__(self, message: str, kind: ErrorKind | str = ErrorKind.rejected):
        super().__init__(message)
        self.message = message
        self.kind = ErrorKind(kind)


@dataclass(frozen=True)
class ToolOutput:
    """A tool's answer when the observation the agent reads is not simply its data as JSON."""

    observation: str
    data: Any = None


@dataclass(frozen=True)
class ToolSpec:
    """What is known of one tool without running it: derived from its `@tool` method."""

    name: str
    description: str
    args_model: type[ToolArgs]
    kind: ToolKind
    group: str = "shoppingbench"
    icon: str = "🔧"  # how a UI marks the tool's steps
    returns: Any = None  # the type of the tool's data, for HTTP response schemas (None: any JSON)

    def openai_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        _strip_titles(schema)
        schema.setdefault("properties", {})
        schema.pop("additionalProperties", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": schema}}

    def parameters(self) -> list[tuple[str, FieldInfo]]:
        return list(self.args_model.model_fields.items())


@dataclass(frozen=True)
class BoundTool:
    """A tool of one toolkit instance: its spec and how to run it."""

    spec: ToolSpec
    toolkit: Toolkit
    method_name: str
    takes_env: bool
    args_param: str | None  # the parameter that takes the whole args model; None when fields are spread

    def __call__(self, env: Episode, args: ToolArgs) -> Any:
        method = getattr(self.toolkit, self.method_name)
        kwargs: dict[str, Any] = {"env": env} if self.takes_env else {}
        if self.args_param is not None:
            kwargs[self.args_param] = args
        else:
            kwargs.update({name: getattr(args, name) for name in type(args).model_fields})
        return method(**kwargs)


def tool(kind: ToolKind, *, group: str | None = None, icon: str = "🔧",
         returns: Any = None) -> Callable[[Callable], Callable]:
    """Mark a `Toolkit` method as a tool; `kind` is `read` (only looks) or `write` (changes the episode).

    `group` overrides the toolkit's group for this tool; `icon` marks its steps in a UI; `returns`
    is the type of its data (e.g. `list[SearchHit]`), the response schema of its HTTP route.
    """
    if kind not in ("read", "write"):
        raise ValueError(f"a tool's kind is 'read' or 'write', not {kind!r}")

    def mark(fn: Callable) -> Callable:
        setattr(fn, _TOOL_ATTR, {"kind": kind, "group": group, "icon": icon, "returns": returns})
        return fn

    return mark


class Toolkit:
    """A set of tools declared as `@tool` methods. Subclasses set `group` (shown in `/tools`)."""

    group: ClassVar[str] = "tools"
    # Whether the read tools make sense outside an episode (a stateless HTTP GET route each).
    stateless: ClassVar[bool] = True
    _specs_cache: ClassVar[dict[type, list[tuple[ToolSpec, str, bool, str | None]]]] = {}

    @classmethod
    def _declared(cls) -> list[tuple[ToolSpec, str, bool, str | None]]:
        if cls not in Toolkit._specs_cache:
            found = []
            for name in _definition_order(cls):
                fn = getattr(cls, name, None)
                meta = getattr(fn, _TOOL_ATTR, None)
                if meta is None:
                    continue
                args_model, takes_env, args_param = _args_model(cls, name, fn)
                spec = ToolSpec(name=name, description=_description(fn, name), args_model=args_model,
                                kind=meta["kind"], group=meta["group"] or cls.group, icon=meta["icon"],
                                returns=meta["returns"])
                found.append((spec, name, takes_env, args_param))
            Toolkit._specs_cache[cls] = found
        return Toolkit._specs_cache[cls]

    @classmethod
    def specs(cls) -> list[ToolSpec]:
        """The toolkit's tools in declaration order, without an instance."""
        return [spec for spec, *_ in cls._declared()]

    @classmethod
    def from_config(cls, world: Any = None, **options: Any) -> Toolkit:
        """Build from a config mapping (`load_toolkits`); `world` is the sandbox it will serve."""
        return cls(**options)

    def tools(self) -> list[BoundTool]:
        return [BoundTool(spec, self, name, takes_env, args_param)
                for spec, name, takes_env, args_param in type(self)._declared()]


def _definition_order(cls: type) -> list[str]:
    """Method names, base classes' first, each class in source order (so schemas list tools stably)."""
    seen: list[str] = []
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            if name not in seen:
                seen.append(name)
    return seen


def _description(fn: Callable, name: str) -> str:
    doc = inspect.getdoc(fn)
    if not doc:
        raise TypeError(f"tool {name} has no docstring: its first paragraph is what the LLM reads")
    return " ".join(doc.split("\n\n")[0].split())


def _args_model(cls: type, name: str, fn: Callable) -> tuple[type[ToolArgs], bool, str | None]:
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    takes_env = any(p.name == "env" for p in params)
    params = [p for p in params if p.name != "env"]
    # Only the schema's parameters are resolved: `env` is often imported for type checking only.
    hints = _resolve_hints(fn, [p.name for p in params])
    for p in params:
        if p.name not in hints:
            raise TypeError(f"tool {name}: parameter {p.name} has no type annotation")
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args / **kwargs cannot be described to a model")
    if len(params) == 1 and inspect.isclass(hints[params[0].name]) and \
            issubclass(hints[params[0].name], BaseModel):
        model = hints[params[0].name]
        if not issubclass(model, ToolArgs):
            raise TypeError(f"tool {name}: its arguments model must subclass ToolArgs (unknown keys refused)")
        return model, takes_env, params[0].name
    fields: dict[str, Any] = {}
    for p in params:
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints[p.name], default)
    model_name = "".join(part.title() for part in name.split("_")) + "Args"
    return create_model(model_name, __base__=ToolArgs, __module__=cls.__module__, **fields), takes_env, None


def _resolve_hints(fn: Callable, names: list[str]) -> dict[str, Any]:
    raw = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k in names}
    holder = type("_Hints", (), {"__annotations__": raw, "__module__": fn.__module__})
    module = inspect.getmodule(fn)
    return typing.get_type_hints(holder, globalns=vars(module) if module else None, include_extras=True)


def _strip_titles(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("title", None)
        for v in node.values():
            _strip_titles(v)
    elif isinstance(node, list):
        for v in node:
            _strip_titles(v)


def collect_tools(toolkits: Iterable[Toolkit]) -> dict[str, BoundTool]:
    """Every tool of these toolkits by name; two toolkits may not declare the same name."""
    out: dict[str, BoundTool] = {}
    for kit in toolkits:
        for bound in kit.tools():
            if bound.spec.name in out:
                raise ValueError(f"tool {bound.spec.name!r} is declared by both {type(out[bound.spec.name].toolkit).__name__}"
                                 f" and {type(kit).__name__}")
            out[bound.spec.name] = bound
    return out


def select_tools(available: dict[str, BoundTool], selection: list[str] | None) -> list[str]:
    """Tool names for a selection of tool names and toolkit group names (`shoppingbench`, `cart`,
    ...), in declaration order (so prompts list tools alike however they were chosen); None
    selects every tool."""
    if selection is None:
        return list(available)
    groups: dict[str, list[str]] = {}
    for name, bound in available.items():
        groups.setdefault(bound.spec.group, []).append(name)
    names: list[str] = []
    unknown = []
    for item in selection:
        expanded = [item] if item in available else groups.get(item)
        if expanded is None:
            unknown.append(item)
            continue
        names += expanded
    if unknown:
        raise ValueError(f"unknown tools {unknown}; tools: {', '.join(available)}; groups: {', '.join(groups)}")
    return [n for n in available if n in names]


# -- derived views ------------------------------------------------------------------------------
def describe_tools(specs: Iterable[ToolSpec], style: str = "full") -> str:
    """A readable tool list for the system prompt (JSON schemas cost 3x the tokens).

    `compact` is one line per tool, its signature and first sentence (a quarter of the tokens), for
    small students that learn the arguments' formats from examples rather than from prose.
    """
    specs = list(specs)
    if style == "compact":
        return "\n".join(_compact_tool_line(spec) for spec in specs)
    lines = []
    for spec in specs:
        schema = spec.openai_schema()["function"]["parameters"]
        required = set(schema.get("required", []))
        params = []
        for pname, p in schema.get("properties", {}).items():
            kind = p.get("type") or "/".join(x.get("type", "?") for x in p.get("anyOf", []) if x.get("type") != "null")
            extra = "required" if pname in required else f"default {json.dumps(p['default'])}" if "default" in p \
                else "optional"
            desc = f": {p['description']}" if p.get("description") else ""
            params.append(f"    {pname} ({kind}, {extra}){desc}")
        lines.append(f"- {spec.name}: {spec.description}" + ("\n" + "\n".join(params) if params else ""))
    return "\n".join(lines)


def _compact_tool_line(spec: ToolSpec) -> str:
    schema = spec.openai_schema()["function"]["parameters"]
    required = set(schema.get("required", []))
    params = [name if name in required else f"{name}?" for name in schema.get("properties", {})]
    return f"- {spec.name}({', '.join(params)}): {spec.description.split('. ')[0].rstrip('.')}."


_JSON_TO_PY = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}


def _python_annotation(prop: dict[str, Any]) -> Any:
    """The Python type TRL's schema reader maps back to this JSON-schema property's type."""
    kinds = [prop.get("type")] if prop.get("type") else [x.get("type") for x in prop.get("anyOf", [])]
    kinds = [k for k in kinds if k and k != "null"]
    if "enum" in prop:
        kinds = ["string"]
    return _JSON_TO_PY.get(kinds[0] if kinds else "string", str)


def trl_environment_class(specs: Iterable[ToolSpec], name: str = "ShoppingToolMethods") -> type:
    """A class whose public methods are these tools, as TRL's `environment_factory` reads them.

    TRL turns each public method into a tool schema with `transformers.utils.get_json_schema`: type
    hints plus a Google-style docstring with an `Args:` entry per parameter. Each generated method
    takes the model's keyword arguments and calls `self._step(tool_name, arguments)`, which the
    subclass implements (running the call through a `ShoppingEnv`). Arguments the model leaves out
    are not sent, so the sandbox's own defaults and validation apply.
    """
    namespace: dict[str, Any] = {}
    for spec in specs:
        namespace[spec.name] = _trl_method(spec)
    return type(name, (), namespace)


def _trl_method(spec: ToolSpec) -> Callable:
    schema = spec.openai_schema()["function"]["parameters"]
    required = set(schema.get("required", []))
    props = schema.get("properties", {})
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    arg_lines = []
    # Required first: Python signatures cannot put a parameter without a default after one with.
    for pname in sorted(props, key=lambda n: n not in required):
        prop = props[pname]
        annotation = _python_annotation(prop)
        annotations[pname] = annotation
        default = inspect.Parameter.empty if pname in required else None
        params.append(inspect.Parameter(pname, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                        annotation=annotation))
        text = prop.get("description") or pname.replace("_", " ")
        if "enum" in prop:
            text += f" One of: {', '.join(map(str, prop['enum']))}."
        arg_lines.append(f"    {pname}: {' '.join(text.split())}")
    tool_name = spec.name

    def method(self, *args: Any, **kwargs: Any) -> str:
        bound = method.__signature__.bind(self, *args, **kwargs)
        arguments = {k: v for k, v in bound.arguments.items() if k != "self" and v is not None}
        return self._step(tool_name, arguments)

    method.__name__ = method.__qualname__ = spec.name
    method.__signature__ = inspect.Signature(params, return_annotation=str)
    method.__annotations__ = annotations
    method.__doc__ = spec.description + ("\n\nArgs:\n" + "\n".join(arg_lines) if arg_lines else "")
    return method


# -- plug-ins ---------------------------------------------------------------------------------------
TOOLKIT_ENTRY_POINTS = "shoplab.toolkits"


def _toolkit_entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=TOOLKIT_ENTRY_POINTS)}


def toolkit_names() -> list[str]:
    """Plug-in toolkits installed in this environment (the `shoplab.toolkits` entry points)."""
    return sorted(_toolkit_entry_points())


def toolkit_classes() -> dict[str, type[Toolkit]]:
    """The installed plug-in toolkit classes by name (their tools are known without building them)."""
    out = {}
    for name, ep in sorted(_toolkit_entry_points().items()):
        cls = ep.load()
        if inspect.isclass(cls) and issubclass(cls, Toolkit):
            out[name] = cls
    return out


def load_toolkits(config: dict[str, dict[str, Any] | None] | None, world: Any = None) -> list[Toolkit]:
    """Plug-in toolkit instances from config: `{name: {option: value}}`, e.g.
    `{"rewrite": {"rewriter": "rule"}, "recsys": {"service": "runs/recsys/service"}}`.

    A package offers a toolkit by declaring an entry point in the `shoplab.toolkits` group (see
    pyproject.toml); the sandbox and the agents never name it. Each class is built with
    `from_config(world, **options)`. Instances hold their own loaded models, so two configs in one
    process never share state by accident; build them once and hand them to every episode.
    """
    if not config:
        return []
    available = _toolkit_entry_points()
    unknown = sorted(set(config) - set(available))
    if unknown:
        raise ValueError(f"unknown toolkits {unknown}; installed: {', '.join(sorted(available)) or 'none'}")
    kits = []
    for name, options in config.items():
        cls = available[name].load()
        if not (inspect.isclass(cls) and issubclass(cls, Toolkit)):
            raise TypeError(f"entry point {name!r} is not a Toolkit class")
        kits.append(cls.from_config(world, **(options or {})))
    return kits
