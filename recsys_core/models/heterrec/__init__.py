from recsys_core.models.heterrec.model import HeterRec, item_token_table

__all__ = ["HeterRec", "item_token_table"]
