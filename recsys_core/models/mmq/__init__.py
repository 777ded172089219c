from recsys_core.models.mmq.model import MMQ

__all__ = ["MMQ"]
