from recsys_core.models.matt.model import MATT, CountMinSketches

__all__ = ["MATT", "CountMinSketches"]
