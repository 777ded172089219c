"""`RecsysToolkit`: recommender tools for agents, `rank_products`, `similar_products`, `recommend_next`,
`recommend_with_reasoning` (REG4Rec, when the service has a reasoner).

They answer from a recsys service folder (`shoplab recsys build-service`): a CTR ranker, a
semantic-ID tokenizer and a generative retriever trained on a simulation of the sandbox's
shoppers. Offered to agents as the `recsys` plug-in toolkit (entry point `shoplab.toolkits`): an
agent config names it with its service folder, `toolkits: {recsys: {service: runs/recsys/service}}`,
and lists the tools it wants in `tools`. One toolkit instance loads the service once (on the first
call) and serves every episode (the service keeps no episode state). Bad arguments become readable
tool errors; the episode continues.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from sandbox.toolkit import Episode, ErrorKind, ToolArgs, ToolError, Toolkit, tool

if TYPE_CHECKING:
    from sandbox import ShoppingWorld

MAX_RANK_IDS = 100
MAX_HISTORY_IDS = 50
MAX_K = 20
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")


def _id_list(value: Any, field: str) -> list[str]:
    """A list of product ids from a JSON list or a comma-separated string; numbers become strings."""
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise ValueError(f"{field} must be a list of product id strings")
    ids: list[str] = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, str | int):
            raise ValueError(f"{field} must hold product id strings, not {type(part).__name__}")
        text = str(part).strip()
        if not text:
            continue
        if not _ID.match(text):
            raise ValueError(f"not a product id: {text[:60]!r}")
        if text not in ids:
            ids.append(text)
    return ids


def _bounded_ids(value: Any, field: str, limit: int, too_many: str, allow_empty: bool = False) -> list[str]:
    """`_id_list` with the count checks every tool argument applies: at least one id (unless
    `allow_empty`), at most `limit`."""
    ids = _id_list(value, field)
    if not ids and not allow_empty:
        raise ValueError("give at least one product id")
    if len(ids) > limit:
        raise ValueError(too_many)
    return ids


class _CountArgs(ToolArgs):
    """Arguments with a result count `k` (each subclass declares it, with its own description)."""

    @field_validator("k", mode="before", check_fields=False)
    @classmethod
    def _k(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, float) and not v.is_integer():
            raise ValueError("k must be an integer")
        return v


class RankProductsArgs(ToolArgs):
    product_ids: list[str] = Field(description="Product ids to order by how likely the shopper clicks them "
                                               "(1 to 100, e.g. from find_product).")
    # A plain object (not a nested model) keeps the JSON schema free of $refs that small LLMs trip on.
    context: dict[str, Any] = Field(default_factory=dict, description='Optional, e.g. {"history": ["<id>", ...]}: '
                                    "products the shopper viewed or bought, oldest first (at most 50).")

    @field_validator("product_ids", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> list[str]:
        return _bounded_ids(v, "product_ids", MAX_RANK_IDS, f"at most {MAX_RANK_IDS} product ids per call")

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> dict[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError('context must be an object such as {"history": ["<product id>", ...]}')
        unknown = sorted(set(v) - {"history"})
        if unknown:
            raise ValueError(f"unknown context keys {unknown}; the only key is history")
        return {"history": _bounded_ids(v.get("history") or [], "context.history", MAX_HISTORY_IDS,
                                        f"at most {MAX_HISTORY_IDS} history products", allow_empty=True)}

    def history(self) -> list[str]:
        return list(self.context.get("history", []))


class SimilarProductsArgs(_CountArgs):
    product_id: str = Field(description="One product id.")
    k: int = Field(5, ge=1, le=MAX_K, description=f"How many similar products, 1 to {MAX_K}.")

    @field_validator("product_id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> str:
        if isinstance(v, list | tuple) and len(v) == 1:
            v = v[0]
        ids = _id_list([v] if isinstance(v, str | int) and not isinstance(v, bool) else v, "product_id")
        if len(ids) != 1:
            raise ValueError("give exactly one product_id")
        return ids[0]


class RecommendNextArgs(_CountArgs):
    history: list[str] = Field(description="Product ids the shopper viewed or bought, oldest first (1 to 50).")
    k: int = Field(5, ge=1, le=MAX_K, description=f"How many products to recommend, 1 to {MAX_K}.")

    @field_validator("history", mode="before")
    @classmethod
    def _history(cls, v: Any) -> list[str]:
        return _bounded_ids(v, "history", MAX_HISTORY_IDS, f"at most {MAX_HISTORY_IDS} history products")


def _call(fn, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:  # the service's messages say what to change
        raise ToolError(str(exc), ErrorKind.invalid_arguments) from exc


class RecsysToolkit(Toolkit):
    """A recommender service's answers as agent tools; the service loads on the first call."""

    group = "recsys"

    def __init__(self, service: str | Path | Any | None = None, world: ShoppingWorld | None = None):
        """`service`: a service folder, a loaded `RecsysService`, or None (every call then answers
        with an error saying how to configure one). `world`: the sandbox a folder is loaded against
        (default: the first episode's)."""
        self._source = str(service) if isinstance(service, str | Path) else None
        self._service = None if service is None or isinstance(service, str | Path) else service
        self._world = world
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, world: ShoppingWorld | None = None, service: str | None = None) -> RecsysToolkit:
        return cls(service=service, world=world)

    def service(self, world: ShoppingWorld) -> Any:
        with self._lock:
            if self._service is not None:
                return self._service
            if self._source is None:
                raise ToolError("no recommender service is configured: set `toolkits: {recsys: {service: <folder>}}` "
                                "in the agent config (build one with `shoplab recsys build-service`)",
                                ErrorKind.unavailable)
            from recsys_core.service import RecsysService

            try:
                self._service = RecsysService.load(self._source, self._world or world)
            except (FileNotFoundError, ValueError) as exc:
                raise ToolError(f"the recommender service could not be loaded: {exc}", ErrorKind.unavailable) from exc
            return self._service

    def _recommendations(self, env: Episode, method: str, args: RecommendNextArgs) -> dict[str, Any]:
        """The service's `method` answer for the history, with a note naming history ids it ignored."""
        service = self.service(env.world)
        out: dict[str, Any] = {"recommendations": _call(getattr(service, method), args.history, args.k)}
        _, ignored = service.split_known(args.history)
        if ignored:
            out["note"] = (f"{len(ignored)} history product(s) are unknown to the recommender and were ignored: "
                           f"{', '.join(ignored[:5])}")
        return out

    @tool("read", icon="📊")
    def rank_products(self, env: Episode, args: RankProductsArgs) -> dict[str, Any]:
        """Order products by a recommender's predicted click probability for this shopper; give the product_ids to order and optionally the shopper's recent products as context.history."""
        service = self.service(env.world)
        return {"ranked": _call(service.rank_products, args.product_ids, args.history())}

    @tool("read", icon="🔗")
    def similar_products(self, env: Episode, args: SimilarProductsArgs) -> dict[str, Any]:
        """Products similar to one product (sharing its semantic ID prefix), with titles."""
        service = self.service(env.world)
        return {"product_id": args.product_id, "similar": _call(service.similar_products, args.product_id, args.k)}

    @tool("read", icon="👉")
    def recommend_next(self, env: Episode, args: RecommendNextArgs) -> dict[str, Any]:
        """Products the shopper is likely to want next, given products they viewed (oldest first)."""
        return self._recommendations(env, "recommend_next", args)

    @tool("read", icon="🧭")
    def recommend_with_reasoning(self, env: Episode, args: RecommendNextArgs) -> dict[str, Any]:
        """Products the shopper is likely to want next, given products they viewed (oldest first), each with the reasoning path that led to it: the product's semantic tokens in the order the recommender chose them, their probabilities, and which viewed products share each token."""
        return self._recommendations(env, "recommend_with_reasoning", args)
