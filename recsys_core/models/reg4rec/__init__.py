from recsys_core.models.reg4rec.model import ReasoningPaths, REG4Rec

__all__ = ["REG4Rec", "ReasoningPaths"]
