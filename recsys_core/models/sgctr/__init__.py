from recsys_core.models.sgctr.model import SGCTR

__all__ = ["SGCTR"]
