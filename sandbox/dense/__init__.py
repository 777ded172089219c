"""Dense retrieval for `find_product`: a trainable two-tower text encoder and a faiss index with in-search filters.

`ShoppingWorld(search_mode="dense" | "hybrid")` searches through it; `shoplab sandbox build --dense` and
`shoplab sandbox dense-index` build it. Modules import torch and faiss lazily where they can, so BM25-only
use of the sandbox never loads them.
"""
