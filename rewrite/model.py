"""A rewriting LLM (any HF causal LM, optionally with a LoRA adapter) that decodes in batches.

Beam search gives the N candidates of offline feedback; greedy decoding serves. The object is a
`sandbox.rewrite_stage.QueryRewriter`, so it plugs into search as is.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewrite.cleaning import clean_rewrite
from rewrite.prompts import prompt_messages

STAGE_FILE = "stage.json"


def resolve_stage(path: str | Path) -> tuple[str, str | None]:
    """(base model, adapter or None) of a trained stage folder, a bare adapter or a model folder."""
    p = Path(path)
    if (p / STAGE_FILE).exists():
        info = json.loads((p / STAGE_FILE).read_text())
        if info.get("merged") and Path(info["merged"]).exists():
            return info["merged"], None
        adapter = info.get("adapter")
        return info["base_model"], str(p / adapter) if adapter else None
    if (p / "adapter_config.json").exists():
        return json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"], str(p)
    return str(path), None


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

    def __init__(self, model_path: str | Path, adapter: str | Path | None = None, device: str = "cpu",
                 max_new_tokens: int = 24, batch_size: int = 16, cache_size: int = 10_000):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        self.model = model.to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.source = {"base_model": str(model_path), "adapter": str(adapter) if adapter else None}
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

    def candidates(self, queries: Sequence[str], n: int, **kwargs: Any) -> list[list[str]]:
        """Up to n distinct clean rewrites per query (beam search by default)."""
        raw = self.generate_raw(queries, num_beams=n, num_return_sequences=n, **kwargs)
        return [distinct_rewrites(texts) for texts in raw]

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


class TableRewriter:
    """Rewrites looked up from a precomputed table (batch-decoded once, then served to many episodes)."""

    def __init__(self, table: dict[str, Sequence[str]], name: str = "table"):
        self.table = {k: [r for r in v if r] for k, v in table.items()}
        self.name = name

    def __call__(self, query: str) -> list[str]:
        return list(self.table.get(query, []))
