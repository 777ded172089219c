from recsys_core.models.dgenctr.model import DGenCTR

__all__ = ["DGenCTR"]
