from recsys_core.models.gpsd.model import GPSDGenerative, GPSDRanker, transfer_from_pretrained

__all__ = ["GPSDGenerative", "GPSDRanker", "transfer_from_pretrained"]
