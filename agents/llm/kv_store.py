"""Keys and values of token sequences already read, reused by later prompts that start the same way.

An agent re-sends its whole conversation every turn, and every conversation starts with the same
system prompt. Storing the KV cache of each sequence the model has read (prompt + its answer) lets
the next prompt of that episode — or any prompt sharing the system prompt — prefill only what is
new. Entries are found by longest common token prefix, kept within a byte budget, least recently
used first out; an entry that is a prefix of a newer one is dropped (the newer one covers it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

KV = list[tuple[Any, Any]]  # per layer: keys, values shaped [1, kv_heads, tokens, head_dim]


@dataclass
class _Entry:
    tokens: np.ndarray
    kv: KV
    nbytes: int


class PrefixKVStore:
    def __init__(self, max_bytes: int = 1 << 30, min_tokens: int = 32):
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_id = 0
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: list[int]) -> tuple[int, KV | None]:
        """The longest stored prefix of `tokens` (leaving at least one token to read), or (0, None)."""
        seq = np.asarray(tokens)
        best_len, best_id = 0, None
        for entry_id, entry in self._entries.items():
            n = min(len(entry.tokens), len(seq) - 1)
            if n <= best_len:
                continue
            diff = np.flatnonzero(entry.tokens[:n] != seq[:n])
            common = int(diff[0]) if diff.size else n
            if common > best_len:
                best_len, best_id = common, entry_id
        if best_id is None or best_len < self.min_tokens:
            return 0, None
        self._entries.move_to_end(best_id)
        return best_len, self._entries[best_id].kv

    def put(self, tokens: list[int], kv: KV) -> None:
        if len(tokens) < self.min_tokens:
            return
        seq = np.asarray(tokens)
        for entry_id in [i for i, e in self._entries.items()
                         if len(e.tokens) <= len(seq) and np.array_equal(e.tokens, seq[:len(e.tokens)])]:
            self._drop(entry_id)
        nbytes = sum(k.element_size() * k.nelement() + v.element_size() * v.nelement() for k, v in kv)
        if nbytes > self.max_bytes:
            return
        self._entries[self._next_id] = _Entry(seq, kv, nbytes)
        self._next_id += 1
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, entry_id: int) -> None:
        self.nbytes -= self._entries.pop(entry_id).nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
