"""CTR ranking with an LLM's knowledge (CoCo, KAR-style): the `ctr` task plus cached LLM states.

Data: `data.kind: movielens` (the ML-1M CTR protocol of `recsys_core.data.movielens`) or
`data.kind: simulated` (the sandbox simulator's logs, `recsys_core.data.ctr`). The texts an LLM reads
(each movie, and each user's profile and last ratings inside the training period; or each sandbox
product's title, category and brand) go through the knowledge LLM once (`task_params.knowledge`: model, n_layers, root, recent, batch_size); the cache
is keyed by model, depth and the texts' digest, so every run and seed over the same data reuses it.

After training, `task_params.resolution` (CoCo's contradiction resolution: LoRA on the LLM's top
block with per-sample gradient masking, `recsys_core.models.coco.resolution`) runs from the best
weights once per listed variant (`masked`, `unmasked`), each from the same start, so their
difference is the masking alone. Test predictions are saved (`test_pred*.npy`, with
`test_users.npy` / `test_labels.npy`) for paired bootstraps over users.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np

from recsys_core.data.ctr import ctr_from_movielens, ctr_from_simulated
from recsys_core.data.movielens import load_movielens
from recsys_core.data.simulated import load_items
from recsys_core.metrics import auc
from recsys_core.models.coco.knowledge import (
    KnowledgeCache,
    build_knowledge_cache,
    knowledge_cache_dir,
    texts_digest,
)
from recsys_core.registry import build_model, register_task
from recsys_core.tasks.ctr import CTRTask
from shoplab_core.devices import resolve_device


@register_task("knowledge_ctr")
class KnowledgeCTRTask(CTRTask):
    monitor = "auc"
    monitor_mode = "max"

    def __init__(self, cfg):
        data = dict(cfg.data)
        self.cfg = cfg
        self.kind = data.get("kind", "movielens")
        self.movielens = None
        if self.kind == "movielens":
            self.movielens = load_movielens(data.get("path"), tuple(data.get("split", (0.8, 0.1))),
                                            data.get("dataset", "ml-1m"), data.get("synthetic"))
            self.data = ctr_from_movielens(self.movielens, max_len=int(data.get("max_len", 30)),
                                           bucket_by_length=bool(data.get("bucket_by_length", True)))
        elif self.kind == "simulated":
            if not data.get("path"):
                raise ValueError("data.path is required for simulated data (a simulator output folder)")
            self.data = ctr_from_simulated(data["path"], max_len=int(data.get("max_len", 50)),
                                           cold_item_rate=float(data.get("cold_item_rate", 0.1)))
        else:
            raise ValueError(f"the knowledge_ctr task reads data.kind movielens | simulated (items with text), "
                             f"not {self.kind!r}")
        self.eval_batch_size = int(cfg.task_params.get("eval_batch_size", 2048))
        self.knowledge_settings = {"model": "default", "n_layers": 8, "root": "runs/recsys/knowledge", "recent": 8,
                                   "batch_size": 32, "max_tokens": 160, **cfg.task_params.get("knowledge", {})}
        self._cache: KnowledgeCache | None = None

    @functools.cache  # noqa: B019 - one task per run: the texts (and their digest) are built once
    def texts(self) -> tuple[list[str], list[list[str]]]:
        """(item texts [n_items+1], user text segments [n_users]; none for simulated data, whose
        users are known by their histories only: CoCo reads their history items' knowledge)."""
        if self.movielens is not None:
            return self.movielens.texts(int(self.knowledge_settings["recent"]))
        items = load_items(self.cfg.data["path"])
        return [""] + [f"Product: {it['title']}. Category: {it.get('category') or 'unknown'}. "
                       f"Brand: {it.get('brand') or 'unknown'}." for it in items], []

    @functools.cached_property
    def knowledge_dir(self) -> Path:
        s = self.knowledge_settings
        items, users = self.texts()
        name = self.data.name if self.cfg.data.get("synthetic") is None else "synthetic"
        return knowledge_cache_dir(s["root"], name, str(s["model"]), int(s["n_layers"]), texts_digest(items, users))

    def knowledge(self) -> KnowledgeCache:
        """The cached LLM states (built on first use: minutes for ML-1M on a CPU, with a progress bar)."""
        if self._cache is None:
            s = self.knowledge_settings
            items, users = self.texts()
            self._cache = build_knowledge_cache(
                items, users, self.knowledge_dir, model_ref=str(s["model"]), n_layers=int(s["n_layers"]),
                device=str(s.get("device", self.cfg.train.device)), batch_size=int(s["batch_size"]),
                max_tokens=int(s["max_tokens"]), keep_trunk=bool(users), progress=bool(self.cfg.train.progress))
        return self._cache

    def build_model(self):
        inputs = self.model_inputs()
        if self.cfg.model == "coco" and self.cfg.model_params.get("mode", "coco") != "none":
            cache = self.knowledge()
            inputs["knowledge"] = {"item_states": cache.item_states, "user_states": cache.user_states,
                                   "user_mask": cache.user_mask}
            if self.movielens is not None:
                inputs["knowledge"]["user_segment_ts"] = self.movielens.segment_times(
                    int(self.knowledge_settings["recent"]))
        return self.with_item_scales(build_model(self.cfg.model, self.cfg.model_params, **inputs))

    def on_train_end(self, model, run_dir: Path) -> dict[str, Any] | None:
        out = super().on_train_end(model, run_dir) or {}
        labels, probs, users = self.predict(model, "test")
        np.save(run_dir / "test_pred.npy", probs.astype(np.float32))
        np.save(run_dir / "test_labels.npy", labels.astype(np.float32))
        np.save(run_dir / "test_users.npy", users)
        if hasattr(model, "prompt_usage") and model.mode == "coco":
            usage = model.prompt_usage.cpu().numpy()
            out["prompt_usage"] = [round(float(u), 4) for u in usage / max(usage.sum(), 1e-9)]
        resolution = dict(self.cfg.task_params.get("resolution", {}))
        variants = list(resolution.pop("variants", []))
        if variants and getattr(model, "mode", "none") != "none":
            if self.movielens is None:
                raise ValueError("the LoRA stage tunes the LLM that reads users' texts: simulated data has none "
                                 "(set task_params.resolution.variants: [])")
            from recsys_core.models.coco.resolution import KnowledgeResolver

            resolver = KnowledgeResolver(self, resolution, device=resolve_device(self.cfg.train.device))
            out["resolution"] = {}
            for variant in variants:
                if variant not in ("masked", "unmasked"):
                    raise ValueError(f"resolution variants are masked | unmasked, got {variant!r}")
                tuned = copy.deepcopy(model)
                result = resolver.run(tuned, gradient_masking=variant == "masked", seed=self.cfg.train.seed)
                labels_v, probs_v, _ = self.predict(tuned, "test")
                np.save(run_dir / f"test_pred_{variant}.npy", probs_v.astype(np.float32))
                result["test_auc_check"] = auc(labels_v, probs_v)
                out["resolution"][variant] = result
        return out
