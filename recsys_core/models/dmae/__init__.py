from recsys_core.models.dmae.model import DMAE

__all__ = ["DMAE"]
