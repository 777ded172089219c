"""The one training loop of the zoo.

Every model trains here: the task supplies batches and the evaluation protocol, the model supplies
`loss(batch)`. The loop is plain PyTorch driven through Hugging Face Accelerate: on this CPU it is a
plain loop, and the same code runs on a GPU, with mixed precision or under `accelerate launch`
(DDP) without edits. Lightning would ask every model to become a LightningModule and bring its own
checkpoint layout; our models differ in what a step is (codebook losses, soft indexing, sampled
softmax) far more than in how a loop runs, so the loop stays ours and small.

A run folder holds `config.yaml` (resolved), `history.jsonl` (one line per evaluation),
`best.pt` (weights at the best validation score), `last.pt` (everything needed to resume),
and `metrics.json` (best validation, test, timing, parameter count).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from recsys_core.config import ExperimentConfig
from recsys_core.registry import get_task
from shoplab_core.devices import resolve_device


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sparse = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return {"total": total, "trainable": trainable, "sparse": sparse, "dense": total - sparse}


def _lr_lambda(cfg: ExperimentConfig, total_steps: int):
    t = cfg.train

    def factor(step: int) -> float:
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.scheduler == "cosine":
            progress = min(1.0, (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps))
            return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _better(a: float, b: float | None, mode: str) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a > b if mode == "max" else a < b


class Trainer:
    def __init__(self, cfg: ExperimentConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.out_dir)
        if cfg.train.num_threads:  # before the task builds its data: SVDs and encoders use it too
            torch.set_num_threads(cfg.train.num_threads)
        self.task = get_task(cfg.task)(cfg)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        from accelerate import Accelerator

        cfg, t = self.cfg, self.cfg.train
        rng = seed_everything(t.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        device = resolve_device(t.device)  # auto: CUDA when present, else the CPU
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # Accelerate places a single process on the current CUDA device
        accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=t.mixed_precision)
        model = self.task.build_model()
        params = [p for p in model.parameters() if p.requires_grad]
        if not params and t.epochs:
            raise ValueError(f"{cfg.model} has no trainable parameters: a test-time method runs with train.epochs: 0")
        # train.epochs: 0 only evaluates (a test-time method such as MATT); the optimiser then has nothing to hold
        optimizer = torch.optim.AdamW(params or [torch.nn.Parameter(torch.zeros(1))], lr=t.lr,
                                      weight_decay=t.weight_decay)
        steps_per_epoch = max(1, self.task.steps_per_epoch())
        total_steps = t.max_steps or steps_per_epoch * t.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps))
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

        state = {"epoch": 0, "step": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "train_seconds": 0.0,
                 "samples": 0}
        last_path = self.run_dir / "last.pt"
        if resume and last_path.exists():
            ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
            accelerator.unwrap_model(model).load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            state.update(ckpt["state"])
            rng.bit_generator.state = ckpt["rng"]
            torch.set_rng_state(ckpt["torch_rng"])
        elif (self.run_dir / "history.jsonl").exists():
            (self.run_dir / "history.jsonl").unlink()

        monitor, mode = self.task.monitor, self.task.monitor_mode
        raw_model = accelerator.unwrap_model(model)
        while state["epoch"] < t.epochs and not (t.max_steps and state["step"] >= t.max_steps):
            model.train()
            epoch = state["epoch"]
            started = time.perf_counter()
            losses: list[float] = []
            bar = tqdm(self.task.train_batches(rng), total=steps_per_epoch, desc=f"{cfg.model} epoch {epoch + 1}",
                       disable=not t.progress, leave=False)
            for batch in bar:
                batch = _to_device(batch, accelerator.device)
                out = raw_model.loss(batch) if hasattr(raw_model, "loss") else model(batch)
                loss = out[0] if isinstance(out, tuple) else out
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if t.grad_clip:
                    accelerator.clip_grad_norm_(params, t.grad_clip)
                optimizer.step()
                scheduler.step()
                if hasattr(raw_model, "after_step"):
                    raw_model.after_step()
                state["step"] += 1
                state["samples"] += self.task.batch_size_of(batch)
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if t.max_steps and state["step"] >= t.max_steps:
                    break
            state["train_seconds"] += time.perf_counter() - started
            state["epoch"] = epoch + 1
            record: dict[str, Any] = {"epoch": epoch + 1, "step": state["step"],
                                      "train_loss": float(np.mean(losses)) if losses else float("nan")}
            last_epoch = state["epoch"] >= t.epochs or (t.max_steps and state["step"] >= t.max_steps)
            if (epoch + 1) % t.eval_every == 0 or last_epoch:
                model.eval()
                with torch.no_grad():
                    valid = self.task.evaluate(raw_model, "valid")
                record["valid"] = valid
                score = valid.get(monitor, float("nan"))
                if _better(score, state["best"], mode):
                    state.update(best=score, best_epoch=epoch + 1, bad_epochs=0)
                    torch.save(raw_model.state_dict(), self.run_dir / "best.pt")
                else:
                    state["bad_epochs"] += 1
            with (self.run_dir / "history.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            torch.save({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "state": state, "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state()}, last_path)
            if t.progress:
                tqdm.write(json.dumps(record))
            if t.patience and state["bad_epochs"] >= t.patience:
                break

        if (self.run_dir / "best.pt").exists():
            raw_model.load_state_dict(torch.load(self.run_dir / "best.pt", map_location="cpu"))
        else:  # nothing was evaluated during training (train.epochs: 0): the evaluated weights are the run's
            torch.save(raw_model.state_dict(), self.run_dir / "best.pt")
        model.eval()
        with torch.no_grad():
            valid = self.task.evaluate(raw_model, "valid")
            test = self.task.evaluate(raw_model, "test")  # last: a task may keep these predictions (CTR saves them)
        extra = self.task.on_train_end(raw_model, self.run_dir) or {}
        result = {
            "model": cfg.model, "task": cfg.task, "seed": t.seed, "valid": valid, "test": test,
            "best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "steps": state["step"],
            "train_seconds": round(state["train_seconds"], 2),
            "train_samples_per_s": round(state["samples"] / max(state["train_seconds"], 1e-9), 1),
            "parameters": count_parameters(raw_model), **extra,
        }
        (self.run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        return result


def load_run(run_dir: str | Path, map_location: str = "cpu"):
    """(config, task, model with its best weights) of a finished run folder; the model stays on
    `map_location` (tasks build their inputs on the model's device, whichever it is)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a recsys run folder (no config.yaml)")
    cfg = ExperimentConfig.from_dict(yaml.safe_load(cfg_path.read_text()), source=str(cfg_path))
    task = get_task(cfg.task)(cfg)
    model = task.build_model()
    weights = run_dir / "best.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{run_dir} has no best.pt: the run did not finish an evaluation")
    model.load_state_dict(torch.load(weights, map_location=map_location))
    model.to(map_location)
    model.eval()
    return cfg, task, model


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, float]:
    _, task, model = load_run(run_dir)
    with torch.no_grad():
        return task.evaluate(model, split)
