from recsys_core.models.gcl_mo.model import CONTRASTIVE_LOSSES, GCLMO, OBJECTIVES, multi_positive_loss

__all__ = ["CONTRASTIVE_LOSSES", "GCLMO", "OBJECTIVES", "multi_positive_loss"]
