from recsys_core.models.coco.knowledge import KnowledgeCache, KnowledgeLLM, build_knowledge_cache
from recsys_core.models.coco.model import CoCo

__all__ = ["CoCo", "KnowledgeCache", "KnowledgeLLM", "build_knowledge_cache"]
