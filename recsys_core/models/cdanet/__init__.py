from recsys_core.models.cdanet.model import CDAnet

__all__ = ["CDAnet"]
