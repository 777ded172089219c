"""ShoppingBench's relevance, reproduced: Lucene's English analysis and BM25 (k1 0.9, b 0.4), exactly.

ShoppingBench's search service is Pyserini (Lucene via Anserini) over one `contents` field: the
title, the distinct SKU option values and the distinct attribute values (`shoppingbench_contents`),
analysed by Anserini's default English analyzer and ranked by BM25 with Pyserini's defaults. The
`shoppingbench` profile must rank as that service does, or scores measured here mean something else
upstream. tantivy's BM25 has fixed parameters (k1 1.2, b 0.75) and its own analysis, so this module
keeps a second, small inverted index (numpy arrays, memory-mapped) built next to the tantivy index
and scores it the way Lucene 9 does:

- **Analysis** (`lucene_english_tokens`): StandardTokenizer's word rules (Unicode UAX #29 word
  boundaries: letters and digits join, "." "'" ":" join letters, "." "," ";" "'" join digits, so
  "3.5mm", "1,000", "men's" and "e.g" are one token and "wi-fi" is two; accents and soft hyphens stay
  inside a word; an emoji or flag is a token, each Han or Hiragana character is one, a Katakana or Thai
  run is one; "½" is none; tokens of over 255 characters are cut into pieces; no Unicode
  normalisation), then the English possessive filter ("'s"), lower case per code point, Lucene's 33
  English stop words, and Porter stemming (Martin Porter's own C version, which Lucene ports: NLTK's
  `MARTIN_EXTENSIONS` mode).
- **Scoring**: `idf = ln(1 + (N - df + 0.5) / (df + 0.5))`, a query term's weight is its count in the
  query (Anserini's bag-of-words query boosts repeated terms) times idf, and a document's term score
  is `w - w / (1 + tf / (k1 * (1 - b + b * dl / avgdl)))` in 32-bit floats, where `dl` is the
  document length after Lucene's one-byte norm encoding (`SmallFloat.intToByte4`: exact below 24,
  then 4 significant bits). Clause scores are summed in double and rounded to float; equal scores
  are ordered by the product id as a string, as Anserini's searcher sorts its hits.
- **Matching**: any query term (a disjunction), as Pyserini's bag-of-words query.

Why not `bm25s` or a second tantivy field: neither can encode Lucene's length norms, float32
arithmetic and Anserini's tie-breaking, and page-1 parity with Pyserini needs all three
(benchmarks/peer_lucene.py measures it against real Pyserini).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import regex

K1 = 0.9
B = 0.4
MAX_TOKEN_CHARS = 255  # StandardTokenizer's default maxTokenLength
MAX_CLAUSES = 1024  # Lucene's IndexSearcher.maxClauseCount: a longer query fails upstream
HITS_CAP = 100_000  # ShoppingBench's server asks Lucene for this many hits before filtering
FORMAT_VERSION = 1

ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split())

# StandardTokenizer's word rules (Unicode UAX #29), with the `regex` module's Word_Break properties.
_EX = r"[\p{WB=Extend}\p{WB=Format}\p{WB=ZWJ}]"  # ignored inside a word (WB4): accents, soft hyphens
_AL = r"[\p{WB=ALetter}\p{WB=Hebrew_Letter}]"
_NU = r"\p{WB=Numeric}"
_WORD_CHAR = rf"(?:{_AL}|{_NU}|\p{{WB=ExtendNumLet}})"  # letters and digits join (WB8-10, 13a/b)
_MID_LETTER = r"[\p{WB=MidLetter}\p{WB=MidNumLet}\p{WB=Single_Quote}]"  # joins letters (WB6/7)
_MID_NUM = r"[\p{WB=MidNum}\p{WB=MidNumLet}\p{WB=Single_Quote}]"  # joins digits (WB11/12)
_TOKEN = regex.compile("|".join([
    # an emoji: a pictograph with its modifiers and ZWJ-joined pictographs, or a regional-indicator flag
    r"\p{Extended_Pictographic}(?:[\p{WB=Extend}\p{WB=Format}]|\u200d\p{Extended_Pictographic}?)*",
    r"\p{RI}\p{RI}",
    rf"{_WORD_CHAR}{_EX}*(?:{_WORD_CHAR}{_EX}*|(?<={_AL}{_EX}*){_MID_LETTER}{_EX}*(?={_AL})"
    rf"|(?<={_NU}{_EX}*){_MID_NUM}{_EX}*(?={_NU}))*",
    rf"(?:\p{{WB=Katakana}}{_EX}*)+",  # a Katakana run is one token
    rf"[\p{{Han}}\p{{Hiragana}}]{_EX}*",  # each ideograph and each Hiragana letter is its own token
    r"\p{LB=SA}+",  # South-East Asian scripts (Thai, ...): a run is one token
]))
_POSSESSIVE = ("'s", "’s", "＇s", "'S", "’S", "＇S")
_PLAIN_WORD = re.compile(r"\w+")
_JOINER = re.compile(r"[.,:;'’‘·]")  # ASCII text without one of these is plain \w+ runs


@lru_cache(maxsize=1)
def _porter():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer(mode=PorterStemmer.MARTIN_EXTENSIONS)


@lru_cache(maxsize=500_000)
def _stem(token: str) -> str:
    return _porter().stem(token, to_lowercase=False)


def _raw_tokens(text: str) -> Iterable[str]:
    for tok in _TOKEN.findall(text):
        if len(tok) <= MAX_TOKEN_CHARS:
            yield tok
        else:  # StandardTokenizer emits an over-long token in pieces of the maximum length
            for i in range(0, len(tok), MAX_TOKEN_CHARS):
                yield tok[i: i + MAX_TOKEN_CHARS]


def _term_of(token: str) -> str | None:
    """One StandardTokenizer token through the filters: possessive, lower case, stop words, Porter."""
    if token.endswith(_POSSESSIVE):
        token = token[:-2]
    # LowerCaseFilter lowers each code point on its own (Java's Character.toLowerCase): a final Σ is σ,
    # and İ is i, where Python's str.lower() gives ς and i̇.
    token = token.lower() if token.isascii() else "".join(c.lower()[0] for c in token)
    if not token or token in ENGLISH_STOP_WORDS:
        return None
    return _stem(token)


def lucene_english_tokens(text: str) -> list[str]:
    """The terms Anserini's default English analyzer makes of `text` (see the module docstring)."""
    terms = (_term_of(tok) for tok in _raw_tokens(text or ""))  # Lucene normalises nothing (no NFC)
    return [t for t in terms if t is not None]


def shoppingbench_contents(product: dict[str, Any]) -> str:
    """What ShoppingBench indexes of a product: title, distinct SKU values, distinct attribute values."""
    sku_values = {str(v) for option in (product.get("sku_options") or {}).values() for v in option.values()}
    attr_values = {str(v) for values in (product.get("attributes") or {}).values() for v in values}
    return "\n".join([str(product.get("title") or ""), " ".join(sorted(sku_values)), " ".join(sorted(attr_values))])


# -- Lucene's one-byte length norm (org.apache.lucene.util.SmallFloat) --------------------------------
def _long_to_int4(i: int) -> int:
    num_bits = i.bit_length()
    if num_bits < 4:
        return i
    shift = num_bits - 4
    return ((i >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(i: int) -> int:
    bits = i & 0x07
    shift = (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_NUM_FREE_VALUES = 255 - _long_to_int4(2**31 - 1)  # 24


def length_to_norm(length: int) -> int:
    """SmallFloat.intToByte4: exact below 24, then 4 significant bits."""
    if length < _NUM_FREE_VALUES:
        return length
    return _NUM_FREE_VALUES + _long_to_int4(length - _NUM_FREE_VALUES)


def norm_to_length(norm: int) -> int:
    if norm < _NUM_FREE_VALUES:
        return norm
    return min(_NUM_FREE_VALUES + _int4_to_long(norm - _NUM_FREE_VALUES), 2**31 - 1)


LENGTH_TABLE = np.array([norm_to_length(i) for i in range(256)], dtype=np.float32)

SERVICE_BITS = {"official": 1, "freeShipping": 2, "COD": 4, "flashsale": 8}


@dataclass(frozen=True)
class RankedFilter:
    """ShoppingBench's post-filters, as its server applies them to each relevance hit in turn."""

    shop_id: str | None = None
    price_low: float | None = None
    price_high: float | None = None
    services: tuple[str, ...] = ()


class LuceneBM25Builder:
    """Streams products in index order into the arrays `LuceneBM25Index` reads."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.shops: dict[str, int] = {}
        self._token_ids: dict[str, int] = {}
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (docs, term ids, tfs) per batch
        self._lengths = array("q")
        self._prices = array("d")
        self._sold = array("q")
        self._shop = array("i")
        self._service = array("B")
        self._ids: list[str] = []

    def _learn(self, token: str) -> int:
        """The term id of a raw token (-1: it makes no term), remembered: catalogue text repeats its words."""
        term = _term_of(token)
        tid = -1 if term is None else self.vocab.setdefault(term, len(self.vocab))
        self._token_ids[token] = tid
        return tid

    def _doc_term_ids(self, text: str) -> list[int]:
        plain = text.isascii() and not _JOINER.search(text)  # then the words are plain \w+ runs, found faster
        raw = (_PLAIN_WORD if plain else _TOKEN).findall(text)
        if raw and max(map(len, raw)) > MAX_TOKEN_CHARS:  # rare: over-long tokens split, the slow way
            return [self.vocab.setdefault(t, len(self.vocab)) for t in lucene_english_tokens(text)]
        cache = self._token_ids
        ids = [cache[t] if t in cache else self._learn(t) for t in raw]
        return [i for i in ids if i >= 0] if -1 in ids else ids

    def add(self, products: Iterable[dict[str, Any]]) -> None:
        """Index products in order. Analysis goes through a raw-token → term-id cache (catalogue text repeats
        its words), and a batch's term frequencies are counted at once with numpy."""
        first = len(self._ids)
        batch_ids: list[int] = []
        lengths: list[int] = []
        for p in products:
            ids = self._doc_term_ids(shoppingbench_contents(p))
            batch_ids.extend(ids)
            lengths.append(len(ids))
            self._prices.append(float(p["price"]))
            self._sold.append(int(p.get("sold_count") or 0))
            shop = str(p.get("shop_id"))
            self._shop.append(self.shops.setdefault(shop, len(self.shops)))
            mask = 0
            for s in p.get("service") or []:
                mask |= SERVICE_BITS.get(s, 0)
            self._service.append(mask)
            self._ids.append(str(p["product_id"]))
        if not lengths:
            return
        self._lengths.extend(lengths)
        docs = np.repeat(np.arange(first, first + len(lengths), dtype=np.int64), lengths)
        keys, tfs = np.unique((docs << 32) | np.asarray(batch_ids, dtype=np.int64), return_counts=True)
        self._chunks.append(((keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32),
                             tfs.astype(np.int32)))

    def save(self, path: str | Path) -> None:
        """Write the index into `path` (replaced as a whole, via a temporary folder and a rename)."""
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        empty = np.zeros(0, np.int32)
        docs = np.concatenate([c[0] for c in self._chunks]) if self._chunks else empty
        term_ids = np.concatenate([c[1] for c in self._chunks]) if self._chunks else empty
        tfs = np.concatenate([c[2] for c in self._chunks]) if self._chunks else empty
        self._chunks = []
        order = np.argsort(term_ids, kind="stable")  # by term, then by doc (stable keeps docs ascending)
        lengths = np.frombuffer(self._lengths, dtype=np.int64) if len(self._lengths) else np.zeros(0, np.int64)
        distinct, of_doc = np.unique(lengths, return_inverse=True)  # encode each distinct length once
        doc_norm = np.array([length_to_norm(int(n)) for n in distinct], dtype=np.uint8)[of_doc]
        indptr = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_ids, minlength=len(self.vocab)), out=indptr[1:])
        np.save(tmp / "postings_doc.npy", docs[order])
        np.save(tmp / "postings_tf.npy", np.minimum(tfs[order], 65535).astype(np.uint16))
        np.save(tmp / "indptr.npy", indptr)
        np.save(tmp / "doc_norm.npy", doc_norm)
        np.save(tmp / "price.npy", np.frombuffer(self._prices, dtype=np.float64))
        np.save(tmp / "sold_count.npy", np.frombuffer(self._sold, dtype=np.int64))
        np.save(tmp / "shop.npy", np.frombuffer(self._shop, dtype=np.int32))
        np.save(tmp / "service.npy", np.frombuffer(self._service, dtype=np.uint8))
        width = max((len(i.encode()) for i in self._ids), default=1)
        np.save(tmp / "product_id.npy", np.array([i.encode() for i in self._ids], dtype=f"S{width}"))
        meta = {"format_version": FORMAT_VERSION, "k1": K1, "b": B, "n_docs": len(self._ids),
                "doc_count": int(np.count_nonzero(lengths)), "sum_total_term_freq": int(lengths.sum()),
                "vocab": list(self.vocab), "shops": list(self.shops)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


class LuceneBM25Index:
    """A saved `LuceneBM25Builder` index: Lucene-exact BM25 ranking with ShoppingBench's post-filters."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"no ShoppingBench relevance index at {path}")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} holds index format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        self.path = path
        self.k1, self.b = float(meta["k1"]), float(meta["b"])
        self.n_docs = int(meta["n_docs"])
        self.doc_count = int(meta["doc_count"])
        self.vocab = {t: i for i, t in enumerate(meta["vocab"])}
        self.shops = {s: i for i, s in enumerate(meta["shops"])}

        def load(name: str) -> np.ndarray:
            return np.load(path / f"{name}.npy", mmap_mode="r")

        self.postings_doc, self.postings_tf, self.indptr = load("postings_doc"), load("postings_tf"), load("indptr")
        self.doc_norm, self.price, self.sold_count = load("doc_norm"), load("price"), load("sold_count")
        self.shop, self.service, self._product_ids = load("shop"), load("service"), load("product_id")
        # Lucene: avgdl = sumTotalTermFreq / docCount in double, then float; the per-norm cache in float.
        avgdl = np.float32(meta["sum_total_term_freq"] / max(self.doc_count, 1))
        k1, b = np.float32(self.k1), np.float32(self.b)
        self._norm_inverse = (np.float32(1) / (k1 * ((np.float32(1) - b) + b * LENGTH_TABLE / avgdl))).astype(
            np.float32)

    @property
    def product_ids(self) -> list[str]:
        """Every product id in index (docid) order."""
        return [b.decode() for b in self._product_ids]

    def idf(self, df: int) -> np.float32:
        return np.float32(np.log(1 + (self.doc_count - df + 0.5) / (df + 0.5)))

    def query_weights(self, text: str) -> dict[int, np.float32] | None:
        """Term id → boost × idf of an analysed query; None when Lucene would refuse it (too many clauses)."""
        counts = Counter(lucene_english_tokens(text))
        if len(counts) > MAX_CLAUSES:
            return None
        weights: dict[int, np.float32] = {}
        for term, n in counts.items():
            tid = self.vocab.get(term)
            if tid is None:
                continue
            df = int(self.indptr[tid + 1] - self.indptr[tid])
            weights[tid] = np.float32(n) * self.idf(df)
        return weights

    def scores(self, weights: dict[int, np.float32]) -> tuple[np.ndarray, np.ndarray]:
        """(docids, float32 scores) of every document matching any query term, docids ascending."""
        if not weights:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        acc: np.ndarray | None = None
        touched: list[np.ndarray] = []
        for tid, w in weights.items():
            lo, hi = int(self.indptr[tid]), int(self.indptr[tid + 1])
            docs = np.asarray(self.postings_doc[lo:hi])
            tf = np.asarray(self.postings_tf[lo:hi]).astype(np.float32)
            ninv = self._norm_inverse[np.asarray(self.doc_norm[docs])]
            s = (w - w / (np.float32(1) + tf * ninv)).astype(np.float32)
            if len(weights) == 1:
                return docs, s
            if acc is None:
                acc = np.zeros(self.n_docs, dtype=np.float64)
            acc[docs] += s  # a term's postings hold each doc once, so fancy-index addition is exact
            touched.append(docs)
        docs = np.unique(np.concatenate(touched))
        return docs, acc[docs].astype(np.float32)

    def ranked(self, text: str, filters: RankedFilter = RankedFilter(), limit: int = 50,
               cap: int = HITS_CAP) -> list[int] | None:
        """Docids of the first `limit` relevance hits (of Lucene's top `cap`) that pass the filters, in
        relevance order; None when the query would fail upstream. Equal scores are ordered by product id
        as a string, as Anserini's searcher sorts them (not by Lucene's docid)."""
        weights = self.query_weights(text)
        if weights is None:
            return None
        docs, scores = self.scores(weights)
        docs, scores = self._top(docs, scores, cap)  # only Lucene's top `cap` hits are ever looked at
        mask = self._filter_mask(docs, filters)
        if mask is not None:
            docs, scores = docs[mask], scores[mask]
        docs, scores = self._top(docs, scores, limit)
        order = np.lexsort((np.asarray(self._product_ids[docs]), -scores.astype(np.float64)))
        return docs[order].tolist()

    def _top(self, docs: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best (score, then product id), unordered."""
        if len(docs) <= k:
            return docs, scores
        kth = scores[np.argpartition(-scores, k - 1)[:k]].min()
        above = np.flatnonzero(scores > kth)
        at = np.flatnonzero(scores == kth)
        need = k - len(above)
        if len(at) > need:  # ties at the cut go to the smaller product ids
            at = at[np.argsort(np.asarray(self._product_ids[docs[at]]), kind="stable")[:need]]
        sel = np.concatenate([above, at])
        return docs[sel], scores[sel]

    def _filter_mask(self, docs: np.ndarray, f: RankedFilter) -> np.ndarray | None:
        mask: np.ndarray | None = None

        def both(m: np.ndarray) -> None:
            nonlocal mask
            mask = m if mask is None else mask & m

        if f.shop_id is not None:
            code = self.shops.get(f.shop_id)
            both(np.zeros(len(docs), bool) if code is None else np.asarray(self.shop[docs]) == code)
        if f.price_low is not None or f.price_high is not None:
            price = np.asarray(self.price[docs])
            with np.errstate(invalid="ignore"):  # a NaN bound filters nothing, as Python's `<` does upstream
                if f.price_low is not None:
                    both(~(price < f.price_low))
                if f.price_high is not None:
                    both(~(price > f.price_high))
        if f.services:
            bits = 0
            for s in f.services:
                bits |= SERVICE_BITS[s]
            both((np.asarray(self.service[docs]) & bits) == bits)
        return mask

    def product_id(self, docid: int) -> str:
        return self._product_ids[docid].decode()

    def sort_keys(self, docids: Sequence[int]) -> tuple[list[float], list[int]]:
        idx = np.asarray(docids, dtype=np.int64)
        return np.asarray(self.price[idx]).tolist(), np.asarray(self.sold_count[idx]).tolist()


def build_lucene_index(products: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Index products (in the order given: it is the docid order that breaks ties) into `path`."""
    builder = LuceneBM25Builder()
    builder.add(products)
    builder.save(path)
