from recsys_core.models.csmf.model import CSMF, STAGES, FreedEntries

__all__ = ["CSMF", "STAGES", "FreedEntries"]
