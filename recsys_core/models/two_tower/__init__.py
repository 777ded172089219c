from recsys_core.models.two_tower.model import NEGATIVE_SAMPLERS, TwoTower, attribute_table

__all__ = ["NEGATIVE_SAMPLERS", "TwoTower", "attribute_table"]
