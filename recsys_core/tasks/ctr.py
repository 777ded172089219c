"""CTR ranking: a model scores (history, candidate) pairs; judged by AUC, GAUC (per user) and logloss.

The data protocols are in `recsys_core.data.ctr`. `score()` is the online entry point (the agent tool
`rank_products`): one user history, N candidates, N click probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.data.ctr import load_ctr
from recsys_core.layers import FeatureEmbedding
from recsys_core.metrics import auc, gauc, logloss
from recsys_core.registry import build_model, get_model, register_task
from recsys_core.tasks.base import Task, to_device
from shoplab_core.devices import module_device


def _id_matrix(values: Any, name: str, n_fields: int) -> np.ndarray:
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros((0, n_fields), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != n_fields:
        raise ValueError(f"{name} must have shape [rows, {n_fields}] (one id per field), got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{name} must hold integer field ids, got dtype {array.dtype}")
    return array.astype(np.int64)


@register_task("ctr")
class CTRTask(Task):
    monitor = "auc"
    monitor_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.data = load_ctr(cfg.data)
        self.eval_batch_size = int(cfg.task_params.get("eval_batch_size", 2048))

    def model_inputs(self) -> dict[str, Any]:
        """What every CTR model is built from: the data's field vocab sizes, dense width, history length
        (and per-user field vocab sizes when the data has user fields)."""
        inputs = {"field_vocab_sizes": list(self.data.field_vocab_sizes), "dense_dim": self.data.dense_dim,
                  "max_len": self.data.max_len}
        if getattr(self.data, "user_field_vocab_sizes", None):
            inputs["user_field_vocab_sizes"] = list(self.data.user_field_vocab_sizes)
        return inputs

    def build_model(self):
        inputs = self.model_inputs()
        data_inputs = getattr(get_model(self.cfg.model).cls, "data_inputs", None)
        if data_inputs is not None:  # what a model derives from the training data itself (STORE's token codes)
            inputs.update(data_inputs(self.data, dict(self.cfg.model_params)))
        return self.with_item_scales(build_model(self.cfg.model, self.cfg.model_params, **inputs))

    def with_item_scales(self, model):
        """The model, its item-field embeddings scaled per item when the data has scales (`data.sid_run` with
        ADA-SID router weights: `recsys_core.data.ctr.add_semantic_id_fields`)."""
        scales = getattr(self.data, "item_field_scales", None)
        if scales is None:
            return model
        features = getattr(model, "features", None)
        if features is None:  # a wrapper (CoCo) embeds through its backbone
            features = getattr(getattr(model, "backbone", None), "features", None)
        if not isinstance(features, FeatureEmbedding) or features.n_fields != scales.shape[1]:
            raise ValueError(f"model {self.cfg.model!r} does not embed the item fields through the zoo's "
                             "FeatureEmbedding (`features`), so the router weights cannot scale them: "
                             "set data.router_scales: false")
        features.set_item_scales(torch.from_numpy(scales))
        return model

    def steps_per_epoch(self) -> int:
        return self.data.n_train_batches(self.cfg.train.batch_size)

    def train_batches(self, rng: np.random.Generator):
        return self.data.train_batches(rng, self.cfg.train.batch_size)

    def predict(self, model, split: str, **forward_kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(labels, click probabilities, users or None) of every sample of `split` (`forward_kwargs` go to
        the model: an inference-time variant such as SGCTR's `refine_steps=0`)."""
        labels, probs, users = [], [], []
        was_training = model.training
        model.eval()
        device = module_device(model)
        with torch.no_grad():
            for batch in self.data.eval_batches(split, self.eval_batch_size):
                probs.append(torch.sigmoid(model(to_device(batch, device), **forward_kwargs)).float().cpu().numpy())
                labels.append(batch["label"].numpy())
                if "user" in batch:
                    users.append(batch["user"].numpy())
        model.train(was_training)
        return (np.concatenate(labels), np.concatenate(probs),
                np.concatenate(users) if users else None)

    def evaluate(self, model, split: str, **forward_kwargs: Any) -> dict[str, float]:
        predictions = self.predict(model, split, **forward_kwargs)
        if not forward_kwargs:  # the trainer's final test evaluation: on_train_end saves these, no second pass
            self.last_predictions = {"split": split, "model": id(model), "predictions": predictions}
        return ctr_metrics(*predictions)

    def score(self, model, hist_fields: Any, cand_fields: Any) -> np.ndarray:
        """Click probabilities [N] of N candidates [N, F] after one user history [T, F] (field ids,
        0 = unknown/padding; T may be 0; only the last max_len history items are used)."""
        data = self.data
        if not data.has_history:
            raise ValueError(f"score() ranks candidates after a user history, but this run's data "
                             f"({data.kind}) has none")
        n_fields = len(data.field_vocab_sizes)
        hist = _id_matrix(hist_fields, "hist_fields", n_fields)
        cand = _id_matrix(cand_fields, "cand_fields", n_fields)
        if len(cand) == 0:
            raise ValueError("cand_fields is empty: give at least one candidate")
        for name, array in (("hist_fields", hist), ("cand_fields", cand)):
            for f, (field, size) in enumerate(zip(data.field_names, data.field_vocab_sizes, strict=True)):
                bad = (array[:, f] < 0) | (array[:, f] >= size)
                if bad.any():
                    raise ValueError(f"{name}: {field} id {int(array[bad, f][0])} is out of range 0..{size - 1}")
        hist = hist[-data.max_len:] if len(hist) else np.zeros((1, n_fields), dtype=np.int64)
        was_training = model.training
        model.eval()
        device = module_device(model)
        with torch.inference_mode():
            hist_t, cand_t = torch.from_numpy(hist).to(device), torch.from_numpy(cand).to(device)
            if hasattr(model, "score_one_history"):
                logits = model.score_one_history(hist_t, cand_t)
            else:
                logits = model({"hist_fields": hist_t.unsqueeze(0).expand(len(cand), -1, -1), "cand_fields": cand_t})
        model.train(was_training)
        return torch.sigmoid(logits).float().cpu().numpy()

    def train_auc(self, model, max_samples: int = 20000) -> float:
        """AUC on a fixed random share of the training samples (positives the model was trained on,
        with freshly drawn negatives): train AUC minus test AUC is the overfitting gap GPSD studies."""
        labels, probs, seen = [], [], 0
        was_training = model.training
        model.eval()
        device = module_device(model)
        with torch.no_grad():
            for batch in self.data.train_batches(np.random.default_rng(12345), self.eval_batch_size):
                probs.append(torch.sigmoid(model(to_device(batch, device))).float().cpu().numpy())
                labels.append(batch["label"].numpy())
                seen += len(labels[-1])
                if seen >= max_samples:
                    break
        model.train(was_training)
        return auc(np.concatenate(labels), np.concatenate(probs))

    def on_train_end(self, model, run_dir: Path) -> dict[str, Any] | None:
        """Train AUC, the transfer report, and the test predictions (`test_predictions.npz`: label, prob,
        user) for paired comparisons between runs; a model's `inference_variants()` ({name: forward kwargs},
        e.g. SGCTR without refinement) are evaluated with the same weights and saved the same way."""
        out: dict[str, Any] = {"train_auc": self.train_auc(model)}
        if getattr(self.data, "sid_source", None):  # provenance of the semantic-ID fields
            out["semantic_ids"] = {"sid_run": self.data.sid_source, "router": self.data.router_source}
        for attr in ("transfer_report", "init_report"):
            if getattr(model, attr, None):
                out[attr.removesuffix("_report")] = getattr(model, attr)
        last = getattr(self, "last_predictions", None)
        if not (last and last["split"] == "test" and last["model"] == id(model)):
            last = {"predictions": self.predict(model, "test")}
        save_predictions(run_dir / "test_predictions.npz", *last["predictions"])
        variants = getattr(model, "inference_variants", dict)()
        if variants:
            out["variants"] = {}
            for name, kwargs in variants.items():
                predictions = self.predict(model, "test", **kwargs)
                save_predictions(run_dir / f"test_predictions_{name}.npz", *predictions)
                out["variants"][name] = {"kwargs": kwargs, "test": ctr_metrics(*predictions),
                                         "valid": self.evaluate(model, "valid", **kwargs)}
        return out


def ctr_metrics(labels: np.ndarray, probs: np.ndarray, users: np.ndarray | None) -> dict[str, float]:
    out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}
    if users is not None:
        out["gauc"] = gauc(users, labels, probs)
    return out


def save_predictions(path: Path, labels: np.ndarray, probs: np.ndarray, users: np.ndarray | None) -> None:
    """A split's predictions in the split's sample order (the same order for every run of the same data)."""
    arrays = {"label": labels.astype(np.float32), "prob": probs.astype(np.float32)}
    if users is not None:
        arrays["user"] = users.astype(np.int64)
    np.savez_compressed(path, **arrays)
