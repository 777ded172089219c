"""Data for the zoo: real sequences (S3-Rec's Amazon sets), CTR samples, simulator logs, item content, item
graphs and the inverted tables that serve them."""

from recsys_core.data.item_graph import InvertedTable, co_click_graph, normalized_adjacency
from recsys_core.data.sequences import (
    S3REC_DATASETS,
    NextItemBatches,
    SequenceData,
    item_windows,
    left_pad,
    load_s3rec,
    split_inputs,
    synthetic_sequences,
    training_sequences,
)
from recsys_core.data.sources import load_sequences

__all__ = [
    "InvertedTable", "S3REC_DATASETS", "NextItemBatches", "SequenceData", "item_windows", "left_pad", "load_s3rec", "load_sequences",
    "split_inputs", "synthetic_sequences", "training_sequences", "co_click_graph", "normalized_adjacency",
]
