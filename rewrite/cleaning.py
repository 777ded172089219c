"""Model output → a rewrite the engine may see: one line of plain words, bounded in length.

A rewrite is untrusted text. It is cut to its first line, stripped of role/label echoes, quotes
and anything but letters, digits and a few joiners, de-duplicated word by word and bounded. The
sandbox analyses it into terms like any query (no query syntax exists there), so this is about
keeping rewrites short and useful, not about safety alone.
"""

from __future__ import annotations

import re
import unicodedata

MAX_REWRITE_WORDS = 12
MAX_REWRITE_CHARS = 100
_LABEL = re.compile(r"^\s*(?:assistant|rewrite|rewritten query|query|search query|answer|output)\s*[:\-]\s*", re.I)
_COT_SPLIT = re.compile(r"(?:^|[;\n])\s*rewrite\s*:\s*", re.I)
_KEEP = re.compile(r"[^\w\s\-.&'/]", re.UNICODE)


def final_rewrite_text(text: str) -> str:
    """The rewrite part of a chain-of-thought answer ("reasoning ...; rewrite: ..."), or the text."""
    parts = _COT_SPLIT.split(text or "")
    return parts[-1] if len(parts) > 1 else (text or "")


def clean_rewrite(text: str, max_words: int = MAX_REWRITE_WORDS, max_chars: int = MAX_REWRITE_CHARS) -> str:
    """A clean rewrite, or "" when nothing usable is left."""
    text = unicodedata.normalize("NFKC", final_rewrite_text(text))
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = _LABEL.sub("", lines[0])
    line = _KEEP.sub(" ", line.replace("_", " "))
    words: list[str] = []
    seen: set[str] = set()
    for w in line.split():
        w = w.strip("-.&'/")
        if not w or w.lower() in seen:
            continue
        seen.add(w.lower())
        words.append(w)
        if len(words) >= max_words:
            break
    out = " ".join(words)
    if len(out) > max_chars:
        out = out[:max_chars].rsplit(" ", 1)[0]
    return out
