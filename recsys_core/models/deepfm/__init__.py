from recsys_core.models.deepfm.model import DeepFM

__all__ = ["DeepFM"]
