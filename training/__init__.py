"""Fine-tuning on top of the sandbox and agents. Torch and TRL load on first use.

- `training.stages` / `training.stage_config`: generic TRL/PEFT stages (SFT, DPO, PRO, GRPO), the PRO
  trainer (`pro_config` / `pro_trainer`, TRL-style), `episode_env` (the sandbox as TRL's
  `environment_factory`), the tool chat template and rewards; `shoplab train ...` (`train_cli`).
- `training.distill`: trajectory distillation of a shopping agent.
- `training.beque`: the BEQUE query-rewriter pipeline and `shoplab rewrite ...`.
"""

from importlib import import_module

_PUBLIC = {
    "LoraSettings": "training.stage_config", "SFTStageConfig": "training.stage_config",
    "AlignStageConfig": "training.stage_config", "GRPOStageConfig": "training.stage_config",
    "run_sft_stage": "training.stages", "run_dpo_stage": "training.stages", "run_pro_stage": "training.stages",
    "run_grpo_stage": "training.stages", "stage_policy_model": "training.stages",
    "DistillConfig": "training.distill.pipeline", "DistillPipeline": "training.distill.pipeline",
    "build_distill_datasets": "training.distill.data", "ShoppingToolEnv": "training.episode_env",
    "environment_factory": "training.episode_env", "use_tool_chat_template": "training.chat_template",
    "format_reward": "training.tool_reward", "tool_call_reward": "training.tool_reward",
    "RewritePipeline": "training.beque.pipeline", "RewritePipelineConfig": "training.beque.pipeline",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
