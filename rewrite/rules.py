"""The rule-based rewriter: keep the product words of a request, drop the talk around them.

It is the baseline every learned rewriter must beat, and one source of candidate rewrites when
the training data is built (rejection sampling decides which candidates survive).
"""

from __future__ import annotations

import re

from rewrite.cleaning import clean_rewrite

STOPWORDS = frozenset("""
a an the and or of for to in on at by with from into about as is are be been being am was were it its this
that these those there here my me i im i'm we our you your he she they them his her their some any
something anything thing things one ones stuff kind sort type please pls plz thanks thank hi hello hey
looking look find show get buy need want wants would like love prefer preferably ideally maybe also just
really very quite so too can could should will shall may might must do does did have has had got
which what who whom whose where when why how that's it's i'd i'll i've id ill ive wanna gonna help
good nice great best cool decent perfect new brand item items product products please searching search
someone somebody gift gifts mom dad friend wife husband kid kids son daughter sister brother girlfriend
boyfriend daily everyday use using used work office home trip what's whats ideas idea every day
any shop anyone feels feel kind wear
""".split())
_PRICE = re.compile(
    r"\b(?:priced\s+|costs?\s+|costing\s+|price\s+|budget\s+(?:of\s+)?|for\s+)?"
    r"(?:under|below|less\s+than|cheaper\s+than|within|up\s+to|over|above|more\s+than|greater\s+than|"
    r"at\s+least|at\s+most|around|about|between|from)\s+"
    r"(?:php\s*|₱\s*|p\s*)?\d[\d,.]*(?:\s*(?:and|to|-)\s*(?:php\s*|₱\s*)?\d[\d,.]*)?\s*(?:php|pesos?|₱)?",
    re.I)
_SERVICE = re.compile(r"\b(?:with\s+|has\s+|offers?\s+|and\s+)?(?:free\s+shipping|cash\s+on\s+delivery|cod|"
                      r"lazmall|lazflash(?:\s+deals?)?|flash\s*sale|official\s+store)\b", re.I)


def strip_constraints(text: str) -> str:
    """The request without its price and service phrases (filters, not product words)."""
    return _SERVICE.sub(" ", _PRICE.sub(" ", text))


def content_words(text: str) -> list[str]:
    words = re.findall(r"[\w\-./']+", text.lower())
    return [w.strip(".'") for w in words if w.strip(".'") and w.strip(".'") not in STOPWORDS]


class RuleRewriter:
    """Stop/filler words and price/service phrases removed; at most `max_words` words kept."""

    name = "rule"

    def __init__(self, max_words: int = 8):
        self.max_words = max_words

    def rewrite(self, query: str) -> str:
        return clean_rewrite(" ".join(content_words(strip_constraints(query))[: self.max_words]))

    def __call__(self, query: str) -> list[str]:
        out = self.rewrite(query)
        return [out] if out else []

    def candidates(self, query: str) -> list[str]:
        """Several term selections, for rejection sampling."""
        words = content_words(strip_constraints(query))
        out = [" ".join(words[:n]) for n in (3, 5, self.max_words)]
        return list(dict.fromkeys(c for c in (clean_rewrite(o) for o in out) if c))
