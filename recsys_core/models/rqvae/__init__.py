from recsys_core.models.rqvae.model import RQVAE

__all__ = ["RQVAE"]
