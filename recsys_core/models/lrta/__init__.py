from recsys_core.models.lrta.model import LowRankTargetAttention

__all__ = ["LowRankTargetAttention"]
