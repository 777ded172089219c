"""Settings of the rewrite steps that need no training code (data, feedback, evaluation).

The whole pipeline's YAML (with the SFT and alignment sections) is `training.RewritePipelineConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    n_train_queries: int = 1200
    n_heldout_queries: int = 300
    filler_start: int = 0                    # which generated products the queries are drawn from
    webshop_pairs: str | None = "data/webshop/goal_query_map.json"
    max_webshop_pairs: int = 300
    llm_candidate_queries: int = 0           # queries that also get sampled LLM candidates (slow on CPU)
    llm_samples: int = 2
    quality_share: float = 0.2               # auxiliary examples per rewrite example
    title_share: float = 0.2
    cot_share: float = 0.15


@dataclass
class FeedbackSettings:
    n_queries: int = 300
    num_beams: int = 4
    num_samples: int = 0                     # sampled candidates besides the beams (more headroom for alignment)
    sample_temperature: float = 1.0
    batch_size: int = 16
    max_new_tokens: int = 20
    depth: int = 50
    relevance_k: int = 10
    increment_k: int = 20
    relevant_cosine: float = 0.5
    w_hit: float = 1.0
    w_relevance: float = 0.5
    w_increment: float = 0.5
    w_fact: float = 0.0                      # penalty per share of the query's fact words a rewrite drops [proposal]
    fact_share: float = 0.01                 # a fact word is held by at most this share of the products
    device: str = "auto"                     # the rewriter LLM (RewriteModel): auto | cpu | cuda | cuda:N
    dtype: str = "auto"                      # auto = bfloat16 on CUDA with bf16 support, float32 otherwise


@dataclass
class EvalSettings:
    n_heldout: int = 300
    ks: list[int] = field(default_factory=lambda: [10, 50])
    batch_size: int = 16
    agent_asr: bool = True                  # the heuristic agent on the sandbox's tasks, with each rewriter
    agent_task_limit: int | None = None
    device: str = "auto"                    # the rewriter LLM (RewriteModel): auto | cpu | cuda | cuda:N
    dtype: str = "auto"
