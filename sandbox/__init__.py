"""The shopping world: catalogue, search engines, tools, episodes, tasks and the scorer.

Public names load on first use (`shoplab_core.lazy`): `import sandbox` is cheap.
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "sandbox.calculator": ["CalculationError", "calculate"],
    "sandbox.catalogue": ["BuildReport", "build_sandbox"],
    "sandbox.data_model": ["PRODUCT_FIELDS", "SERVICES", "Intent", "Product", "Shop", "Voucher"],
    "sandbox.engines.base": ["SearchBackend", "SearchPage", "SearchRequest", "SortOrder", "analyze", "query_terms"],
    "sandbox.engines.lucene_bm25": ["LuceneBM25Index", "lucene_english_tokens"],
    "sandbox.environment": ["ShoppingEnv", "StepResult"],
    "sandbox.rewrite_stage": ["QueryRewriter", "load_query_rewriter"],
    "sandbox.scorer": ["ConstraintCheck", "EmbeddingTitleSimilarity", "EpisodeScore", "default_title_similarity",
                       "pass_hat_k", "score_episode"],
    "sandbox.shoppingbench_profile": ["PROFILES", "ShoppingBenchProfileTools"],
    "sandbox.tasks": ["ProductSpec", "Task", "TaskFormatError", "load_task_file", "load_tasks"],
    "sandbox.toolkit": ["Episode", "ErrorKind", "ToolArgs", "ToolError", "Toolkit", "ToolOutput", "ToolSpec",
                        "describe_tools", "load_toolkits", "tool", "toolkit_classes", "toolkit_names",
                        "trl_environment_class"],
    "sandbox.tools": ["BUILTIN_TOOLKITS", "TOOLS", "Cart", "CartTools", "ShoppingBenchTools", "UtilityTools",
                      "openai_tools", "tool_specs"],
    "sandbox.world": ["SandboxNotFoundError", "ShoppingWorld"],
})
