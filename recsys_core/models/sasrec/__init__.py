from recsys_core.models.sasrec.model import SASRec

__all__ = ["SASRec"]
