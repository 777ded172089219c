from recsys_core.models.ada_sid.model import AdaSID

__all__ = ["AdaSID"]
