"""The token-prefix KV store behind the transformers backend's cache reuse."""

from __future__ import annotations

import torch

from agents.llm.kv_store import PrefixKVStore


def kv_for(n_tokens: int, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, 3, n_tokens, 4), float(n_tokens)), torch.zeros(1, 3, n_tokens, 4)) for _ in range(layers)]


def test_longest_common_prefix_wins_and_one_token_is_left_to_read():
    store = PrefixKVStore(min_tokens=4)
    system = list(range(100, 140))
    store.put(system + [1, 2, 3], kv_for(43))
    store.put(system + [7, 8, 9, 10, 11], kv_for(45))
    n, kv = store.lookup(system + [7, 8, 9, 99])
    assert n == 43 and kv[0][0].shape[2] == 45  # matched 40 + 3 tokens of the second entry
    n, _ = store.lookup(system + [7, 8, 9, 10, 11])  # the whole entry is the prompt: keep one token to read
    assert n == 44
    assert store.lookup([5, 6, 7, 8, 9]) == (0, None)
    assert store.lookup(system[:3] + [0, 0]) == (0, None)  # shorter than min_tokens


def test_an_entry_extended_by_a_newer_one_is_dropped():
    store = PrefixKVStore(min_tokens=2)
    store.put([1, 2, 3], kv_for(3))
    store.put([1, 2, 3, 4, 5], kv_for(5))  # the next turn of the same episode
    store.put([1, 2, 9], kv_for(3))  # another episode
    assert len(store) == 2


def test_byte_budget_evicts_least_recently_used():
    one = sum(k.nelement() * 4 + v.nelement() * 4 for k, v in kv_for(10))
    store = PrefixKVStore(max_bytes=2 * one, min_tokens=2)
    store.put(list(range(10)), kv_for(10))
    store.put(list(range(50, 60)), kv_for(10))
    store.lookup(list(range(10)) + [99])  # touch the first: the second becomes the oldest
    store.put(list(range(80, 90)), kv_for(10))
    assert len(store) == 2 and store.nbytes <= 2 * one
    assert store.lookup(list(range(50, 60)) + [1]) == (0, None)
    assert store.lookup(list(range(10)) + [1])[0] == 10
    store.put(list(range(200, 300)), kv_for(100))  # larger than the whole budget: not stored
    assert len(store) == 2
