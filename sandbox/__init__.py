"""The shopping world: catalogue, search engines, tools, episodes, tasks and the scorer."""

from sandbox.calculator import CalculationError, calculate
from sandbox.catalogue import BuildReport, build_sandbox
from sandbox.data_model import PRODUCT_FIELDS, SERVICES, Intent, Product, Shop, Voucher
from sandbox.engines.base import SearchBackend, SearchPage, SearchRequest, SortOrder, analyze, query_terms
from sandbox.engines.lucene_bm25 import LuceneBM25Index, lucene_english_tokens
from sandbox.environment import ShoppingEnv, StepResult
from sandbox.rewrite_stage import QueryRewriter, load_query_rewriter
from sandbox.scorer import (
    ConstraintCheck,
    EmbeddingTitleSimilarity,
    EpisodeScore,
    default_title_similarity,
    pass_hat_k,
    score_episode,
)
from sandbox.shoppingbench_profile import PROFILES, ShoppingBenchProfileTools
from sandbox.tasks import ProductSpec, Task, TaskFormatError, load_task_file, load_tasks
from sandbox.toolkit import (
    Episode,
    ErrorKind,
    ToolArgs,
    ToolError,
    Toolkit,
    ToolOutput,
    ToolSpec,
    describe_tools,
    load_toolkits,
    tool,
    toolkit_classes,
    toolkit_names,
    trl_environment_class,
)
from sandbox.tools import (
    BUILTIN_TOOLKITS,
    TOOLS,
    Cart,
    CartTools,
    ShoppingBenchTools,
    UtilityTools,
    openai_tools,
    tool_specs,
)
from sandbox.world import ShoppingWorld

__all__ = [
    "BUILTIN_TOOLKITS", "PRODUCT_FIELDS", "QueryRewriter", "load_query_rewriter", "SERVICES", "TOOLS", "BuildReport", "CalculationError", "Cart",
    "CartTools", "ConstraintCheck", "Episode", "ErrorKind", "ShoppingBenchTools", "ToolArgs", "ToolError", "ToolOutput",
    "Toolkit", "describe_tools", "load_toolkits", "tool", "tool_specs", "toolkit_classes", "toolkit_names", "trl_environment_class",
    "EmbeddingTitleSimilarity",
    "EpisodeScore", "Intent", "Product", "ProductSpec", "SearchBackend", "SearchPage", "SearchRequest", "Shop",
    "ShoppingEnv", "ShoppingWorld", "SortOrder", "StepResult", "Task", "TaskFormatError", "ToolSpec", "Voucher",
    "analyze", "build_sandbox", "calculate", "default_title_similarity", "load_task_file", "load_tasks",
    "openai_tools", "pass_hat_k", "query_terms", "score_episode",
    "PROFILES", "LuceneBM25Index", "ShoppingBenchProfileTools", "UtilityTools", "lucene_english_tokens",
]
