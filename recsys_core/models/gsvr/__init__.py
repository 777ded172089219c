from recsys_core.models.gsvr.model import GSVR

__all__ = ["GSVR"]
