from recsys_core.models.din.model import DIN, Dice

__all__ = ["DIN", "Dice"]
