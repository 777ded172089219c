"""A rewriting LLM (any HF causal LM, optionally with a LoRA adapter) that decodes in batches.

Beam search gives the N candidates of offline feedback; greedy decoding serves. The object is a
`sandbox.rewrite_stage.QueryRewriter`, so it plugs into search as is.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewrite.cleaning import clean_rewrite
from rewrite.prompts import prompt_messages
from shoplab_core.models import STAGE_FILE, resolve_model_source

__all__ = ["STAGE_FILE", "RewriteModel", "TableRewriter", "distinct_rewrites", "resolve_stage"]


def resolve_stage(path: str | Path) -> tuple[str, str | None]:
    """(base model, adapter or None) of a trained stage folder, a bare adapter or a model reference
    (`shoplab_core.models.resolve_model_source`)."""
    source = resolve_model_source(path)
    return source.base, source.adapter


def distinct_rewrites(texts: Sequence[str]) -> list[str]:
    """Clean rewrites in order, without empties or case-only duplicates (the engine lower-cases)."""
    seen: dict[str, str] = {}
    for text in texts:
        clean = clean_rewrite(text)
        if clean and clean.lower() not in seen:
            seen[clean.lower()] = clean
    return list(seen.values())


class RewriteModel:
    name = "llm"

    def __init__(self, model_path: str | Path, adapter: str | Path | None = None, device: str = "auto",
                 max_new_tokens: int = 24, batch_size: int = 16, cache_size: int = 10_000, dtype: str = "auto"):
        import torch

        from shoplab_core.models import load_causal_lm

        # Left padding: every prompt of a batch continues from its last token. The adapter is merged.
        model, tokenizer = load_causal_lm(model_path, device=device, dtype=dtype, adapter=adapter,
                                          merge_adapter=True, padding_side="left", eval_mode=True, offline=True)
        self._attach(torch, model, tokenizer, max_new_tokens, batch_size, cache_size,
                     {"base_model": str(model_path), "adapter": str(adapter) if adapter else None})

    def _attach(self, torch: Any, model: Any, tokenizer: Any, max_new_tokens: int, batch_size: int,
                cache_size: int, source: dict[str, Any]) -> None:
        self.torch, self.model, self.tokenizer = torch, model, tokenizer
        self.device = next(model.parameters()).device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.source = source
        self._cache: OrderedDict[str, list[str]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> RewriteModel:
        base, adapter = resolve_stage(path)
        return cls(base, adapter, **kwargs)

    def _prompts(self, task: str, queries: Sequence[str]) -> list[str]:
        return [self.tokenizer.apply_chat_template(prompt_messages(task, query=q), tokenize=False,
                                                   add_generation_prompt=True) for q in queries]

    def generate_raw(self, queries: Sequence[str], task: str = "rewrite", num_beams: int = 1,
                     num_return_sequences: int = 1, do_sample: bool = False, temperature: float = 1.0,
                     max_new_tokens: int | None = None) -> list[list[str]]:
        """Decoded answers per query (uncleaned), batched."""
        out: list[list[str]] = []
        n = num_return_sequences
        for i in range(0, len(queries), self.batch_size):
            chunk = self._prompts(task, queries[i: i + self.batch_size])
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens or self.max_new_tokens,
                                      "num_return_sequences": n, "pad_token_id": self.tokenizer.pad_token_id}
            if do_sample:
                kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
            else:
                beams = max(num_beams, n)
                kwargs.update(do_sample=False, num_beams=beams, **({"early_stopping": True} if beams > 1 else {}))
            with self._lock, self.torch.inference_mode():
                generated = self.model.generate(**enc, **kwargs)
            texts = self.tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out.extend(texts[j * n:(j + 1) * n] for j in range(len(chunk)))
        return out

    def candidates(self, queries: Sequence[str], n: int, num_samples: int = 0, temperature: float = 1.0,
                   **kwargs: Any) -> list[list[str]]:
        """Distinct clean rewrites per query: the n beams of beam search, then up to `num_samples` sampled
        ones that no beam already gave (beams alone differ by a word or two: little for alignment to rank)."""
        raw = self.generate_raw(queries, num_beams=n, num_return_sequences=n, **kwargs)
        if num_samples > 0:
            sampled = self.generate_raw(queries, num_return_sequences=num_samples, do_sample=True,
                                        temperature=temperature, **kwargs)
            raw = [beams + extra for beams, extra in zip(raw, sampled, strict=True)]
        return [distinct_rewrites(texts) for texts in raw]

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, max_new_tokens: int = 24, batch_size: int = 16) -> RewriteModel:
        """Wrap a model already in memory (a stage being trained, scored on validation queries). Generation
        pads on the left; the caller's tokenizer is given back its padding side after each call."""
        import torch

        self = cls.__new__(cls)
        self._attach(torch, model, _LeftPadding(tokenizer), max_new_tokens, batch_size, 0,
                     {"base_model": "in memory", "adapter": None})
        return self

    def rewrite_many(self, queries: Sequence[str]) -> list[str]:
        """One greedy rewrite per query ("" when the model produced nothing usable)."""
        return [(c[0] if c else "") for c in self.candidates(queries, n=1)]

    def __call__(self, query: str) -> list[str]:
        with self._lock:
            hit = self._cache.get(query)
        if hit is None:
            hit = [r for r in self.rewrite_many([query]) if r]
            with self._lock:
                self._cache[query] = hit
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return list(hit)


class _LeftPadding:
    """A tokenizer that pads on the left while it encodes, whatever side its owner trains with."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        side = self._tokenizer.padding_side
        self._tokenizer.padding_side = "left"
        try:
            return self._tokenizer(*args, **kwargs)
        finally:
            self._tokenizer.padding_side = side

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


class TableRewriter:
    """Rewrites looked up from a precomputed table (batch-decoded once, then served to many episodes)."""

    def __init__(self, table: dict[str, Sequence[str]], name: str = "table"):
        self.table = {k: [r for r in v if r] for k, v in table.items()}
        self.name = name

    def __call__(self, query: str) -> list[str]:
        return list(self.table.get(query, []))
