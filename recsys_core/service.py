"""The recommender service behind the agent tools: a CTR ranker, a semantic-ID tokenizer and a
generative retriever, all trained on one simulation of the sandbox, answering in product ids.

A service folder holds `service.json` (written by `shoplab recsys build-service`) naming the
simulator folder and the three run folders (paths relative to the service folder when they share
a root, so the tree can move). Models load lazily: a process that only ranks never loads the
retriever. Every method takes untrusted input and answers bad input with a `ValueError` whose
message says what to do.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys_core.data.simulated import ItemFeaturizer, load_items

SERVICE_FILE = "service.json"
MAX_CANDIDATES = 100
MAX_HISTORY = 100
MAX_K = 100
_ID_CHARS = 60


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (base / path).resolve()


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def _run_config(run_dir: Path, role: str) -> dict[str, Any]:
    import yaml

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"--{role} {run_dir} is not a recsys run folder (no config.yaml)")
    if not (run_dir / "best.pt").exists():
        raise FileNotFoundError(f"--{role} {run_dir} has no best.pt: train it to the end first")
    return yaml.safe_load(cfg_path.read_text()) or {}


def _check_trained_on(cfg: dict[str, Any], sim: Path, role: str, run_dir: Path) -> None:
    data = cfg.get("data") or {}
    kind, path = data.get("kind"), data.get("path")
    if kind != "simulated" or not path:
        raise ValueError(f"--{role} {run_dir} was trained on data.kind={kind!r}; the service needs a run trained "
                         f"on the simulation {sim} (data.kind=simulated, data.path={sim})")
    if Path(path).resolve() != sim.resolve():
        raise ValueError(f"--{role} {run_dir} was trained on the simulation {path}, not on --sim {sim}: item "
                         "indices would not match; train it on the same simulator folder")


def write_service(out: str | Path, sim: str | Path, ranker: str | Path, tokenizer: str | Path | None = None,
                  retriever: str | Path | None = None, reasoner: str | Path | None = None) -> dict[str, Any]:
    """Check that the runs fit together and write `out/service.json`; returns its content. The ranker
    is required (`rank_products`); `tokenizer` (`similar_products`), `retriever` (`recommend_next`, needs
    the tokenizer) and `reasoner` (a REG4Rec `reasoning_retrieval` run, `recommend_with_reasoning`) are
    optional: a tool whose model the service lacks answers with an error saying how to add it."""
    if retriever is not None and tokenizer is None:
        raise ValueError("--retriever needs --tokenizer (the semantic IDs it generates)")
    out, sim, ranker = Path(out), Path(sim), Path(ranker)
    retriever, reasoner = (Path(p) if p is not None else None for p in (retriever, reasoner))
    featurizer = ItemFeaturizer.load(sim)
    n_items = featurizer.n_items
    ranker_cfg = _checked_run(ranker, "ranker", ("ctr", "knowledge_ctr"), "a ctr run (e.g. din) or a knowledge_ctr run (coco)",
                              sim)
    retriever_cfg = (_checked_run(retriever, "retriever", ("generative_retrieval",),
                                  "a generative_retrieval run (e.g. tiger)", sim) if retriever is not None else {})
    if tokenizer is not None:
        tokenizer = Path(tokenizer)
        for name in ("codes.npy", "content.npy"):
            if not (tokenizer / name).exists():
                raise FileNotFoundError(f"--tokenizer {tokenizer} has no {name}: give a finished semantic_id run")
        codes = np.load(tokenizer / "codes.npy", mmap_mode="r")
        content = np.load(tokenizer / "content.npy", mmap_mode="r")
        for name, array in (("codes.npy", codes), ("content.npy", content)):
            if array.shape[0] != n_items + 1:
                raise ValueError(f"--tokenizer {tokenizer}/{name} has {array.shape[0]} rows but the simulation has "
                                 f"{n_items} items (+ row 0): tokenize the same simulator folder")
    reasoner_cfg = (_checked_run(reasoner, "reasoner", ("reasoning_retrieval",), "a reasoning_retrieval run (reg4rec)",
                                 sim) if reasoner is not None else {})
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "sim": _relative(sim, out), "ranker": _relative(ranker, out), "n_items": n_items,
        "models": {"ranker": ranker_cfg.get("model")}, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if tokenizer is not None:
        spec["tokenizer"] = _relative(tokenizer, out)
        spec["models"]["tokenizer"] = _run_model(tokenizer)
    if retriever is not None:
        spec["retriever"] = _relative(retriever, out)
        spec["models"]["retriever"] = retriever_cfg.get("model")
    if reasoner is not None:
        spec["reasoner"] = _relative(reasoner, out)
        spec["models"]["reasoner"] = reasoner_cfg.get("model")
    (out / SERVICE_FILE).write_text(json.dumps(spec, indent=2))
    return spec


def _checked_run(run: Path, role: str, tasks: tuple[str, ...], hint: str, sim: Path) -> dict[str, Any]:
    """The config of the `role` run, checked to be one of `tasks` and trained on the simulator folder `sim`."""
    cfg = _run_config(run, role)
    if cfg.get("task") not in tasks:
        raise ValueError(f"--{role} {run} is a {cfg.get('task')!r} run; give {hint}")
    _check_trained_on(cfg, sim, role, run)
    return cfg


def _run_model(run_dir: Path) -> str | None:
    import yaml

    cfg_path = run_dir / "config.yaml"
    return (yaml.safe_load(cfg_path.read_text()) or {}).get("model") if cfg_path.exists() else None


def _clean_ids(values: Any, what: str, limit: int, allow_empty: bool = False) -> list[str]:
    """Product ids as stripped strings, duplicates removed (first kept), at most `limit`."""
    if values is None:
        values = []
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    if not isinstance(values, list | tuple):
        raise ValueError(f"{what} must be a list of product ids, not {type(values).__name__}")
    ids: list[str] = []
    seen: set[str] = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"{what}: {value!r} is not a product id (ids are strings such as '1052242881')")
        text = str(value).strip()
        if not text:
            continue
        if len(text) > _ID_CHARS:
            raise ValueError(f"{what}: {text[:_ID_CHARS]!r}... is not a product id")
        if text not in seen:
            seen.add(text)
            ids.append(text)
    if not ids and not allow_empty:
        raise ValueError(f"{what} is empty: give at least one product id (from find_product results)")
    if len(ids) > limit:
        raise ValueError(f"{what} has {len(ids)} product ids; at most {limit}")
    return ids


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


class RecsysService:
    """rank_products / similar_products / recommend_next over one simulation's item universe."""

    def __init__(self, service_dir: Path, spec: dict[str, Any], world):
        self.service_dir = service_dir
        self.spec = spec
        self.world = world
        self.sim_dir = _resolve(service_dir, spec["sim"])
        self.ranker_dir = _resolve(service_dir, spec["ranker"])
        self.tokenizer_dir = _resolve(service_dir, spec["tokenizer"]) if spec.get("tokenizer") else None
        self.retriever_dir = _resolve(service_dir, spec["retriever"]) if spec.get("retriever") else None
        self.reasoner_dir = _resolve(service_dir, spec["reasoner"]) if spec.get("reasoner") else None
        self.featurizer = ItemFeaturizer.load(self.sim_dir)
        self.items = load_items(self.sim_dir)
        if len(self.items) != self.featurizer.n_items:
            raise ValueError(f"{self.sim_dir}: items.jsonl and featurizer.json disagree on the item count")
        self.item_fields = np.zeros((len(self.items) + 1, len(self.featurizer.names)), dtype=np.int64)
        for item in self.items:
            self.item_fields[item["index"]] = item["fields"]
        self._lock = threading.RLock()
        self._ranker: tuple[Any, Any] | None = None
        self._retriever: tuple[Any, Any] | None = None
        self._reasoner: tuple[Any, Any] | None = None
        self._codes: np.ndarray | None = None
        self._content: np.ndarray | None = None

    @classmethod
    def load(cls, service_dir: str | Path, world) -> RecsysService:
        service_dir = Path(service_dir)
        path = service_dir / SERVICE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{service_dir} is not a recsys service folder (no {SERVICE_FILE}); build one "
                                    "with `shoplab recsys build-service --sim ... --ranker ... --tokenizer ... "
                                    f"--retriever ... --out {service_dir}`")
        spec = json.loads(path.read_text())
        missing = [k for k in ("sim", "ranker") if not spec.get(k)]
        if missing:
            raise ValueError(f"{path} lacks {missing}; rebuild it with `shoplab recsys build-service`")
        service = cls(service_dir, spec, world)
        for role, folder in (("ranker", service.ranker_dir), ("retriever", service.retriever_dir),
                             ("tokenizer", service.tokenizer_dir)):
            if folder is not None and not folder.is_dir():
                raise FileNotFoundError(f"{path}: the {role} run folder {folder} does not exist")
        return service

    # -- lazily loaded models ---------------------------------------------------------------------
    def ranker(self):
        """(ctr task, model) of the ranker run."""
        with self._lock:
            if self._ranker is None:
                from recsys_core.trainer import load_run

                _, task, model = load_run(self.ranker_dir)
                self._ranker = (task, model)
            return self._ranker

    def retriever(self):
        """(generative retrieval task, model) of the retriever run."""
        with self._lock:
            if self.retriever_dir is None:
                raise ValueError("this recommender service has no retriever: rebuild it with "
                                 "`shoplab recsys build-service ... --tokenizer <semantic_id run> --retriever <tiger run>`")
            if self._retriever is None:
                from recsys_core.trainer import load_run

                _, task, model = load_run(self.retriever_dir)
                if task.data.n_items != self.featurizer.n_items:
                    raise ValueError(f"the retriever {self.retriever_dir} knows {task.data.n_items} items, the "
                                     f"simulation {self.featurizer.n_items}: rebuild the service")
                self._retriever = (task, model)
            return self._retriever

    def reasoner(self):
        """(reasoning retrieval task, REG4Rec model) of the reasoner run; a clear error when the service has none."""
        with self._lock:
            if self.reasoner_dir is None:
                raise ValueError("this recommender service has no reasoning model: rebuild it with "
                                 "`shoplab recsys build-service ... --reasoner <reg4rec run>`")
            if self._reasoner is None:
                from recsys_core.trainer import load_run

                _, task, model = load_run(self.reasoner_dir)
                if task.data.n_items != self.featurizer.n_items:
                    raise ValueError(f"the reasoner {self.reasoner_dir} knows {task.data.n_items} items, the "
                                     f"simulation {self.featurizer.n_items}: rebuild the service")
                self._reasoner = (task, model)
            return self._reasoner

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(semantic-ID codes [n+1, L], content vectors [n+1, d]) of the tokenizer run."""
        with self._lock:
            if self.tokenizer_dir is None:
                raise ValueError("this recommender service has no semantic-ID tokenizer: rebuild it with "
                                 "`shoplab recsys build-service ... --tokenizer <semantic_id run>`")
            if self._codes is None:
                codes = np.load(self.tokenizer_dir / "codes.npy")
                content = np.load(self.tokenizer_dir / "content.npy").astype(np.float32)
                if len(codes) != self.featurizer.n_items + 1 or len(content) != len(codes):
                    raise ValueError(f"the tokenizer run {self.tokenizer_dir} does not match the simulation's "
                                     f"{self.featurizer.n_items} items: rebuild the service")
                self._codes, self._content = codes, content
            return self._codes, self._content

    # -- helpers ----------------------------------------------------------------------------------
    def _records(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        found = self.world.products(ids) if ids else {}
        unknown = [i for i in ids if i not in found]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ValueError(f"unknown product ids: {shown}; use product_ids from find_product results")
        return found

    def split_known(self, product_ids: list[str]) -> tuple[list[int], list[str]]:
        """(item indices of the ids inside the simulated universe, ids outside it)."""
        known, outside = [], []
        for pid in product_ids:
            index = self.featurizer.index_of(pid)
            (known.append(index) if index else outside.append(pid))
        return known, outside

    def fields_of(self, product_ids: list[str]) -> np.ndarray:
        """[len(ids), F] fields: universe items from the item table, any other catalogue product from
        its catalogue record (item 0, its real side fields); unknown ids are an error."""
        indices = np.array([self.featurizer.index_of(p) for p in product_ids], dtype=np.int64)
        out = self.item_fields[indices]
        outside = [p for p, i in zip(product_ids, indices, strict=True) if i == 0]
        if outside:
            records = self._records(list(dict.fromkeys(outside)))
            rows = np.flatnonzero(indices == 0)
            out[rows] = self.featurizer.fields_matrix([records[product_ids[r]] for r in rows])
        return out

    def _item_out(self, index: int) -> dict[str, Any]:
        item = self.items[index - 1]
        return {"product_id": item["product_id"], "title": item["title"]}

    # -- the three services ----------------------------------------------------------------------
    def rank_products(self, product_ids: list[str], history: list[str] | None = None) -> list[dict[str, Any]]:
        """Candidates ordered by the ranker's click probability after `history` (oldest first)."""
        ids = _clean_ids(product_ids, "product_ids", MAX_CANDIDATES)
        past = _clean_ids(history, "history", MAX_HISTORY, allow_empty=True) if history is not None else []
        both = self.fields_of(ids + past)  # one catalogue lookup names every unknown id at once
        cand, hist = both[:len(ids)], both[len(ids):]
        task, model = self.ranker()
        with self._lock:
            scores = np.asarray(task.score(model, hist, cand), dtype=np.float64)
        if scores.shape != (len(ids),) or not np.all(np.isfinite(scores)):
            raise RuntimeError(f"the ranker {self.ranker_dir} returned unusable scores {scores.shape}")
        order = np.argsort(-scores, kind="stable")
        return [{"product_id": ids[i], "score": round(float(scores[i]), 6)} for i in order]

    def similar_products(self, product_id: str, k: int = 5) -> list[dict[str, Any]]:
        """Items sharing the longest semantic-ID prefix with the product, ties by content cosine."""
        if isinstance(product_id, bool) or not isinstance(product_id, str | int):
            raise ValueError(f"product_id must be one product id, not {type(product_id).__name__}")
        ids = _clean_ids([product_id], "product_id", 1)
        k = _check_k(k)
        index = self.featurizer.index_of(ids[0])
        if not index:
            self._records(ids)  # an id the catalogue does not know gets that error first
            raise ValueError(f"product {ids[0]} is outside the recommender's item universe "
                             f"({self.featurizer.n_items} products with semantic IDs); similar_products only "
                             "knows those: use find_product for others")
        codes, content = self.codes()
        same = codes[1:] == codes[index]
        shared = np.cumprod(same, axis=1).sum(axis=1)
        cosine = content[1:] @ content[index]
        shared[index - 1] = -1  # never the product itself
        order = np.lexsort((-cosine, -shared))[:k]
        return [{**self._item_out(int(i) + 1), "shared_prefix": int(shared[i])} for i in order]

    def _known_history(self, history: list[str]) -> list[int]:
        """Item indices of the history products inside the universe (others ignored); an error when none is."""
        ids = _clean_ids(history, "history", MAX_HISTORY)
        known, outside = self.split_known(ids)
        if not known:
            self._records(outside)
            raise ValueError(f"none of the {len(ids)} history products is in the recommender's item universe "
                             f"({self.featurizer.n_items} products); give products the shopper viewed from "
                             "earlier recommendations, or use find_product")
        return known

    def recommend_next(self, history: list[str], k: int = 5) -> list[dict[str, Any]]:
        """What the shopper is likely to click next after `history` (oldest first); products outside
        the simulated universe are ignored (see `split_known`), history items are not recommended."""
        known, k = self._known_history(history), _check_k(k)
        task, model = self.retriever()
        seen = set(known)
        with self._lock:
            indices = task.recommend(model, known, k + len(seen))
        picks = [i for i in indices if i not in seen][:k]
        return [self._item_out(i) for i in picks]

    def recommend_with_reasoning(self, history: list[str], k: int = 5) -> list[dict[str, Any]]:
        """REG4Rec's next items after `history` (oldest first), each with its reasoning path: the semantic
        tokens in the order the model chose them (CRSS), each token's probability, and which history
        products carry the same token (what the step drew on). History items are not recommended."""
        known, k = self._known_history(history), _check_k(k)
        task, model = self.reasoner()
        seen = set(known)
        with self._lock:
            paths = model.beam_search(task.history_items([np.asarray(known, dtype=np.int64)]),
                                      max(task.beam_size, k + len(seen)))
        codes = model.item_codes.cpu().numpy()
        recent = known[-task.max_items:]
        out: list[dict[str, Any]] = []
        for beam in range(paths.items.shape[1]):
            item = int(paths.items[0, beam])
            if item <= 0 or item in seen:
                continue
            steps = []
            for step in range(paths.codebooks.shape[2]):
                codebook, code = int(paths.codebooks[0, beam, step]), int(paths.codes[0, beam, step])
                label = f"expert {codebook}" if codebook < model.free_codebooks else "collision"
                shared = [self.items[h - 1]["product_id"] for h in recent if codes[h, codebook] == code]
                steps.append({"token": f"{label}:{code}",
                              "probability": round(float(np.exp(float(paths.step_log_probs[0, beam, step]))), 4),
                              "shared_with_history": shared[:3]})
            out.append({**self._item_out(item), "score": round(float(paths.scores[0, beam]), 4), "path": steps})
            if len(out) == k:
                break
        return out
