"""Training stages as functions over HF `datasets`: SFT and DPO through TRL, PRO through `PROTrainer`.

Every stage writes one folder: `adapter/` (a PEFT LoRA adapter, loadable by PEFT and by vLLM's
`LoRARequest`), `merged/` on request (the adapter folded into the weights: the next stage trains
a fresh adapter on top, and DPO's reference model is then exactly this stage's policy), the
Trainer's `checkpoint-*` folders for `--resume`, and `stage.json` naming the base model.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback

from shoplab_core.models import (  # the stage-folder format `RewriteModel.load` reads
    STAGE_FILE,
    stage_merged_model,
)
from training.stage_config import AlignStageConfig, GRPOStageConfig, LoraSettings, SFTStageConfig


def _trainer_args(out_dir: Path, epochs: float, learning_rate: float, batch_size: int, grad_accum: int,
                  max_steps: int, save_steps: int, seed: int, warmup_ratio: float = 0.0, device: str = "auto",
                  bf16: bool | None = None) -> dict[str, Any]:
    use_cpu, use_bf16 = _placement(device, bf16)
    return {"output_dir": str(out_dir), "num_train_epochs": epochs, "learning_rate": learning_rate,
            "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
            "max_steps": max_steps, "save_steps": save_steps, "save_total_limit": 2, "logging_steps": 5,
            "warmup_steps": warmup_ratio, "lr_scheduler_type": "cosine", "seed": seed, "use_cpu": use_cpu,
            "bf16": use_bf16, "report_to": "none", "dataloader_num_workers": 0, "save_only_model": False}


def _placement(device: str = "auto", bf16: bool | None = None) -> tuple[bool, bool]:
    """(use_cpu, bf16) of the HF Trainer for a stage's `device` and `bf16` settings: the CPU unless the
    device resolves to an accelerator; bf16 None = autocast where the device is CUDA with bf16 support
    (`shoplab_core.devices.resolve_dtype("auto", ...)`), off on the CPU. Weights stay float32."""
    import torch

    from shoplab_core.devices import resolve_device, resolve_dtype

    resolved = resolve_device(device)
    if bf16 is None:
        bf16 = resolve_dtype("auto", resolved) == torch.bfloat16
    return resolved.type == "cpu", bool(bf16)


def _load(model_path: str, tool_chat_template: bool = False):
    """(model, tokenizer) to train: float32 weights on the CPU (the Trainer places them), pad-token fallback."""
    from shoplab_core.models import load_causal_lm

    model, tokenizer = load_causal_lm(model_path, device=None, dtype="float32", offline=True)
    if tool_chat_template:
        from training.chat_template import use_tool_chat_template

        use_tool_chat_template(tokenizer)
    return model, tokenizer


def _last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.exists() else None


def _train(trainer, out_dir: Path, resume: bool) -> dict[str, Any]:
    checkpoint = _last_checkpoint(out_dir) if resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    history = [h for h in trainer.state.log_history if "loss" in h]
    import resource

    return {"train_loss": round(float(result.training_loss), 5), "steps": trainer.state.global_step,
            "seconds": round(seconds, 1), "resumed_from": checkpoint,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "first_logged_loss": history[0]["loss"] if history else None,
            "last_logged_loss": history[-1]["loss"] if history else None}


def save_stage(trainer, tokenizer, out_dir: Path, base_model: str, lora: bool, merge: bool,
               metrics: dict[str, Any]) -> Path:
    """Write the stage folder (see the module docstring) and return it."""
    info: dict[str, Any] = {"base_model": str(base_model), "adapter": None, "merged": None, "metrics": metrics}
    model = trainer.model
    if lora:
        model.save_pretrained(str(out_dir / "adapter"))
        tokenizer.save_pretrained(str(out_dir / "adapter"))
        info["adapter"] = "adapter"
        if merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(str(out_dir / "merged"))
            tokenizer.save_pretrained(str(out_dir / "merged"))
            info["merged"] = str((out_dir / "merged").resolve())
    else:
        model.save_pretrained(str(out_dir / "model"))
        tokenizer.save_pretrained(str(out_dir / "model"))
        info["base_model"] = info["merged"] = str((out_dir / "model").resolve())
    (out_dir / STAGE_FILE).write_text(json.dumps(info, indent=2))
    return out_dir


def stage_policy_model(stage_dir: str | Path) -> str:
    """The weights a later stage starts from: the merged (or fully fine-tuned) model of a stage."""
    return stage_merged_model(stage_dir)  # ValueError (ModelRefError) when the stage kept no merged model


def run_sft_stage(model_path: str, dataset: Dataset, out_dir: str | Path, cfg: SFTStageConfig,
                  lora: LoraSettings | None = None, seed: int = 0, resume: bool = False, merge: bool = True) -> Path:
    """Supervised fine-tuning on chat data: the loss covers the completion (prompt/completion rows) or
    every assistant turn (`messages` rows; needs a template with generation markers, see
    `training.chat_template`)."""
    from trl import SFTConfig, SFTTrainer

    out = Path(out_dir)
    use_lora = not cfg.full_finetune
    if cfg.init_adapter and not use_lora:
        raise ValueError("sft.init_adapter continues a LoRA adapter; it cannot be combined with full_finetune")
    model, tokenizer = _load(model_path, cfg.tool_chat_template)
    keep = [c for c in ("prompt", "completion", "messages") if c in dataset.column_names]
    dataset = dataset.select_columns(keep)
    conversations = "messages" in keep
    trainer_args = _trainer_args(out, cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.grad_accum,
                                 cfg.max_steps, cfg.save_steps, seed, cfg.warmup_ratio, cfg.device, cfg.bf16)
    trainer_args["logging_steps"] = cfg.logging_steps
    args = SFTConfig(**trainer_args, max_length=cfg.max_length,
                     completion_only_loss=True if "prompt" in keep else None,
                     assistant_only_loss=conversations and cfg.tool_chat_template, padding_free=cfg.padding_free)
    peft_config = (lora or LoraSettings()).peft_config() if use_lora else None
    if cfg.init_adapter:
        model = warm_start_adapter(model, cfg.init_adapter)
        peft_config = None  # the model already carries the (trainable) adapter
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    metrics = _train(trainer, out, resume)
    metrics["examples"] = len(dataset)
    return save_stage(trainer, tokenizer, out, model_path, use_lora, merge, metrics)


def warm_start_adapter(model, adapter_dir: str | Path):
    """`model` wrapped with the LoRA adapter in `adapter_dir`, its weights trainable: training goes on
    from that adapter (same rank, same target modules) rather than from a fresh one."""
    from peft import PeftModel

    folder = Path(adapter_dir)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"sft.init_adapter: {folder} is not a PEFT adapter folder (no adapter_config.json); "
                                "give a stage's adapter/ folder, e.g. runs/distill/sft/adapter")
    return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


class BestOnValidation(TrainerCallback):
    """Early stopping on a validation score, for stages whose quality is not their loss.

    `score(model, tokenizer)` returns a dict with a "score" (higher is better) and any other numbers to log.
    The model is scored before the first step and every `every_steps` steps (and after the last); the
    trainable weights of the best score are kept in memory and put back when training ends, so the stage
    saves its best state: the starting model itself when no step beat it. `patience` evaluations in a row
    without a gain stop the training (0: never)."""

    def __init__(self, score: Callable[[Any, Any], dict[str, float]], tokenizer: Any, every_steps: int,
                 patience: int = 0):
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        self.score, self.tokenizer, self.every_steps, self.patience = score, tokenizer, every_steps, patience
        self.curve: list[dict[str, float]] = []
        self.best_score = float("-inf")
        self.best_step: int | None = None
        self._best_state: dict[str, Any] | None = None
        self._since_best = 0

    def _evaluate(self, model: Any, step: int) -> None:
        import torch

        if self.curve and self.curve[-1]["step"] == step:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            result = dict(self.score(model, self.tokenizer))
        model.train(was_training)
        self.curve.append({"step": step, **{k: round(float(v), 5) for k, v in result.items()}})
        if result["score"] > self.best_score + 1e-9:
            self.best_score, self.best_step, self._since_best = float(result["score"]), step, 0
            self._best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            self._since_best += 1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every_steps == 0:
            self._evaluate(model, state.global_step)
            if self.patience and self._since_best >= self.patience:
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        import torch

        self._evaluate(model, state.global_step)
        if self._best_state is not None:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name in self._best_state:
                        param.copy_(self._best_state[name])

    def summary(self) -> dict[str, Any]:
        return {"validation_curve": self.curve, "best_step": self.best_step,
                "best_validation_score": round(self.best_score, 5)}


def _run_preference_stage(trainer_cls, args, model_path: str, dataset: Dataset, out_dir: Path, lora: LoraSettings | None,
                          resume: bool, merge: bool, count_key: str,
                          validation: Callable[[Any, Any], dict[str, float]] | None = None,
                          eval_every_steps: int = 0, patience: int = 0) -> Path:
    """A LoRA preference stage (DPO, PRO): train a fresh adapter on `model_path`, save the stage folder.

    With `validation`, the stage keeps its best weights on it (`BestOnValidation`; `eval_every_steps` 0:
    once an epoch)."""
    model, tokenizer = _load(model_path)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=(lora or LoraSettings()).peft_config())
    best = None
    if validation is not None:
        every = eval_every_steps or max(1, math.ceil(len(trainer.get_train_dataloader()) / args.gradient_accumulation_steps))
        best = BestOnValidation(validation, tokenizer, every, patience)
        trainer.add_callback(best)
    metrics = _train(trainer, out_dir, resume)
    metrics[count_key] = len(dataset)
    if best is not None:
        metrics.update(best.summary())
    return save_stage(trainer, tokenizer, out_dir, model_path, True, merge, metrics)


def run_dpo_stage(model_path: str, dataset: Dataset, out_dir: str | Path, cfg: AlignStageConfig,
                  lora: LoraSettings | None = None, seed: int = 0, resume: bool = False, merge: bool = False) -> Path:
    """DPO on prompt/chosen/rejected chat data. With LoRA the reference is `model_path` itself."""
    from trl import DPOConfig, DPOTrainer

    out = Path(out_dir)
    args = DPOConfig(**_trainer_args(out, cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.grad_accum,
                                     cfg.max_steps, cfg.save_steps, seed, device=cfg.device, bf16=cfg.bf16),
                     beta=cfg.beta, max_length=cfg.max_length)
    return _run_preference_stage(DPOTrainer, args, model_path, dataset.select_columns(["prompt", "chosen", "rejected"]),
                                 out, lora, resume, merge, "pairs")


def run_pro_stage(model_path: str, dataset: Dataset, out_dir: str | Path, cfg: AlignStageConfig,
                  lora: LoraSettings | None = None, seed: int = 0, resume: bool = False, merge: bool = False,
                  validation: Callable[[Any, Any], dict[str, float]] | None = None) -> Path:
    """PRO on prompt/completions/rewards data (see `training.pro_trainer`); early stopping on `validation`
    when given (`BestOnValidation`)."""
    from training.pro_config import PROConfig
    from training.pro_trainer import PROTrainer

    out = Path(out_dir)
    args = PROConfig(**_trainer_args(out, cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.grad_accum,
                                     cfg.max_steps, cfg.save_steps, seed, device=cfg.device, bf16=cfg.bf16),
                     max_length=cfg.max_length,
                     sft_weight=cfg.sft_weight, reward_scale=cfg.pro_reward_scale)
    return _run_preference_stage(PROTrainer, args, model_path, dataset, out, lora, resume, merge, "queries",
                                 validation, cfg.eval_every_steps, cfg.patience)


def run_grpo_stage(model_path: str, dataset: Dataset, out_dir: str | Path, cfg: GRPOStageConfig,
                   reward_funcs: list | None = None, environment_factory=None, lora: LoraSettings | None = None,
                   seed: int = 0, resume: bool = False, merge: bool = True, tool_chat_template: bool = True) -> Path:
    """GRPO on `prompt` rows with a fresh LoRA adapter on `model_path`.

    Step-level: `reward_funcs` score each generated turn (extra dataset columns reach them as keyword
    arguments). Episode-level: `environment_factory` turns every rollout into a multi-turn episode in
    an environment whose `get_reward()` scores it (see `training.episode_env`).
    """
    import os

    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    out = Path(out_dir)
    model, tokenizer = _load(model_path, tool_chat_template)
    tokenizer.padding_side = "left"
    if environment_factory is None:
        # Step rewards judge the raw turn (its format included): with a response parser set, TRL would
        # hand them the parser's reading instead, which drops the markup of a malformed call.
        for attr in ("response_template", "response_schema"):
            if getattr(tokenizer, attr, None) is not None:
                setattr(tokenizer, attr, None)
    trainer_args = _trainer_args(out, 1.0, cfg.learning_rate, cfg.batch_size, cfg.grad_accum, cfg.max_steps,
                                 cfg.save_steps, seed, device=cfg.device, bf16=cfg.bf16)
    trainer_args.update(logging_steps=1, warmup_steps=0, lr_scheduler_type="constant")
    extra: dict[str, Any] = {}
    if cfg.use_vllm:
        extra.update(use_vllm=True, vllm_mode=cfg.vllm_mode)
    if cfg.max_tool_calling_iterations is not None:
        extra["max_tool_calling_iterations"] = cfg.max_tool_calling_iterations
    args = GRPOConfig(**trainer_args, num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                      temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta, log_completions=False,
                      shuffle_dataset=True, **extra)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs or None, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=(lora or LoraSettings()).peft_config(),
                          environment_factory=environment_factory)
    metrics = _train(trainer, out, resume)
    rewards = [h for h in trainer.state.log_history if "reward" in h]
    metrics.update(prompts=len(dataset), rewards=[round(float(h["reward"]), 4) for h in rewards],
                   reward_std=[round(float(h.get("reward_std", 0.0)), 4) for h in rewards],
                   reward_components=[{k: round(float(v), 4) for k, v in h.items() if k.startswith("rewards/")}
                                      for h in rewards])
    return save_stage(trainer, tokenizer, out, model_path, True, merge, metrics)
