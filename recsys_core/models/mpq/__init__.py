from recsys_core.models.mpq.model import MPQ

__all__ = ["MPQ"]
