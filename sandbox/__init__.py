"""The shopping world: catalogue, search engines, tools, episodes, tasks and the scorer."""

from sandbox.calculator import CalculationError, calculate
from sandbox.catalogue import BuildReport, build_sandbox
from sandbox.data_model import PRODUCT_FIELDS, SERVICES, Intent, Product, Shop, Voucher
from sandbox.engines.base import SearchBackend, SearchPage, SearchRequest, SortOrder, analyze, query_terms
from sandbox.environment import ShoppingEnv, StepResult
from sandbox.scorer import (
    ConstraintCheck,
    EmbeddingTitleSimilarity,
    EpisodeScore,
    default_title_similarity,
    pass_hat_k,
    score_episode,
)
from sandbox.tasks import ProductSpec, Task, TaskFormatError, load_task_file, load_tasks
from sandbox.tools import TOOLS, ToolSpec, openai_tools
from sandbox.world import ShoppingWorld

__all__ = [
    "PRODUCT_FIELDS", "SERVICES", "TOOLS", "BuildReport", "CalculationError", "ConstraintCheck",
    "EmbeddingTitleSimilarity",
    "EpisodeScore", "Intent", "Product", "ProductSpec", "SearchBackend", "SearchPage", "SearchRequest", "Shop",
    "ShoppingEnv", "ShoppingWorld", "SortOrder", "StepResult", "Task", "TaskFormatError", "ToolSpec", "Voucher",
    "analyze", "build_sandbox", "calculate", "default_title_similarity", "load_task_file", "load_tasks",
    "openai_tools", "pass_hat_k", "query_terms", "score_episode",
]
