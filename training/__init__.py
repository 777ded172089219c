"""Fine-tuning on top of the sandbox and agents. Torch and TRL load on first use.

- `training.stages` / `training.stage_config`: generic TRL/PEFT stages (SFT, DPO, PRO, GRPO), the PRO
  trainer (`pro_config` / `pro_trainer`, TRL-style), `episode_env` (the sandbox as TRL's
  `environment_factory`), the tool chat template and rewards; `shoplab train ...` (`train_cli`).
- `training.distill`: trajectory distillation of a shopping agent.
- `training.beque`: the BEQUE query-rewriter pipeline and `shoplab rewrite ...`.
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "training.stage_config": ["LoraSettings", "SFTStageConfig", "AlignStageConfig", "GRPOStageConfig"],
    "training.stages": ["run_sft_stage", "run_dpo_stage", "run_pro_stage", "run_grpo_stage", "stage_policy_model"],
    "training.distill.pipeline": ["DistillConfig", "DistillPipeline"],
    "training.distill.data": ["build_distill_datasets"],
    "training.episode_env": ["ShoppingToolEnv", "environment_factory"],
    "training.chat_template": ["use_tool_chat_template"],
    "training.tool_reward": ["format_reward", "tool_call_reward"],
    "training.beque.pipeline": ["RewritePipeline", "RewritePipelineConfig"],
})
