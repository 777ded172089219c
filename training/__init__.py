"""Fine-tuning on top of the sandbox and agents: TRL/PEFT stages (SFT, DPO, PRO, GRPO), trajectory
distillation of a shopping agent, and the BEQUE rewriter pipeline. Torch and TRL load on first use."""

from importlib import import_module

_PUBLIC = {
    "LoraSettings": "training.stage_config", "SFTStageConfig": "training.stage_config",
    "AlignStageConfig": "training.stage_config", "GRPOStageConfig": "training.stage_config",
    "run_sft_stage": "training.stages", "run_dpo_stage": "training.stages", "run_pro_stage": "training.stages",
    "run_grpo_stage": "training.stages", "stage_policy_model": "training.stages",
    "DistillConfig": "training.distill", "DistillPipeline": "training.distill",
    "build_distill_datasets": "training.distill_data", "ShoppingToolEnv": "training.episode_env",
    "environment_factory": "training.episode_env", "use_tool_chat_template": "training.chat_template",
    "format_reward": "training.tool_reward", "tool_call_reward": "training.tool_reward",
    "RewritePipeline": "training.rewrite_pipeline", "RewritePipelineConfig": "training.rewrite_pipeline",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
