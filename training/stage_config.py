"""Settings shared by every training stage: LoRA, SFT and the preference stages (DPO, PRO)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


@dataclass
class SFTStageConfig:
    epochs: float = 1.0
    learning_rate: float = 5e-4
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 192
    warmup_ratio: float = 0.05
    max_steps: int = -1
    full_finetune: bool = False
    save_steps: int = 200
    tool_chat_template: bool = False  # training.chat_template: tool calls, generation markers (assistant-only loss)
    padding_free: bool = False        # one row per batch, no padding (flash-attention style); CPU: keep False
    logging_steps: int = 5
    # bf16 autocast: faster on CPUs with AVX512-BF16 / AMX, and on GPUs. None = auto: on where the
    # training device is a CUDA GPU with bf16 support, off on the CPU.
    bf16: bool | None = None
    device: str = "auto"              # auto | cpu | cuda (shoplab_core.devices); the CPU unless CUDA is present
    # Warm start: continue training this PEFT LoRA adapter folder (trained on the same base model)
    # instead of a fresh adapter, e.g. a second SFT pass over more episodes. None = a fresh adapter.
    init_adapter: str | None = None


@dataclass
class AlignStageConfig:
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 4              # queries per step (PRO) / pairs per step (DPO)
    grad_accum: int = 1
    max_length: int = 160
    sft_weight: float = 0.1          # PRO: weight of the NLL term on the best candidate
    pro_reward_scale: float = 1.0    # PRO: multiplies reward gaps (divides its temperatures) [proposal]
    beta: float = 0.1                # DPO
    max_pairs_per_query: int = 3     # DPO: the best level against each worse level, at most this many
    max_steps: int = -1
    save_steps: int = 200
    bf16: bool | None = None          # None = auto: bf16 autocast on a CUDA GPU with bf16 support, else off
    device: str = "auto"              # auto | cpu | cuda
    # Early stopping on validation (BEQUE pipeline): the stage is scored before its first step and every
    # `eval_every_steps` (0: once an epoch) on this many queries neither SFT nor alignment trained on, and
    # keeps the best-scoring weights (the starting model when no step beat it). 0 queries: off.
    validation_queries: int = 0
    eval_every_steps: int = 0
    patience: int = 0                 # stop after this many evaluations without a gain (0: never stop early)


@dataclass
class GRPOStageConfig:
    """GRPO (TRL GRPOTrainer) with LoRA; `batch_size` counts completions and must be a multiple of
    `num_generations` (one prompt per step with the defaults)."""
    enabled: bool = True
    learning_rate: float = 1e-5
    num_generations: int = 4
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = 16
    max_completion_length: int = 64
    max_tool_calling_iterations: int | None = None  # episode GRPO: tool rounds per rollout
    temperature: float = 0.7
    top_p: float = 0.9
    beta: float = 0.001               # KL to the reference (the stage's starting model)
    save_steps: int = 8
    bf16: bool | None = True          # None = auto (on where CUDA has bf16, off on the CPU)
    device: str = "auto"              # auto | cpu | cuda
    tasks: int = 16                   # episode GRPO: training tasks the rollouts draw from
    # GPU: generate rollouts with vLLM (TRL's `colocate` shares the training GPU; `server` talks to
    # `trl vllm-serve` on other GPUs). Needs the official vllm package and CUDA.
    use_vllm: bool = False
    vllm_mode: str = "colocate"
