from recsys_core.models.tiger.model import TIGER, DecodeState

__all__ = ["TIGER", "DecodeState"]
