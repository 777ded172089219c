from recsys_core.models.esans.model import ESANS, multimodal_item_features, semantic_clusters

__all__ = ["ESANS", "multimodal_item_features", "semantic_clusters"]
