from recsys_core.models.store.model import STORE, behaviour_codes

__all__ = ["STORE", "behaviour_codes"]
