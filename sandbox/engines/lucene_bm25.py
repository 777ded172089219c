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

import itertools
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

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
_SPACE_OR_NEWLINE = re.compile(r"[ \n]")


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


@lru_cache(maxsize=1 << 18)
def _word_terms(word: str) -> tuple[str, ...]:
    return tuple(lucene_english_tokens(word))


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

_DOC_COLUMNS = {"doc_norm": np.uint8, "price": np.float64, "sold_count": np.int64, "shop": np.int32,
                "service": np.uint8}  # one value per document, saved as <name>.npy
SERVICE_BITS = {"official": 1, "freeShipping": 2, "COD": 4, "flashsale": 8}


@dataclass(frozen=True)
class RankedFilter:
    """ShoppingBench's post-filters, as its server applies them to each relevance hit in turn."""

    shop_id: str | None = None
    price_low: float | None = None
    price_high: float | None = None
    services: tuple[str, ...] = ()


class LuceneTerms(NamedTuple):
    """The Lucene terms of consecutive documents, numbered locally: made where the text is (a build
    worker), turned into the index's term ids by the builder."""

    terms: list[str]  # the distinct terms, in order of first occurrence
    ids: np.ndarray  # int32 local term ids, document after document (repeats kept)
    offsets: np.ndarray  # int64: document d's ids are ids[offsets[d]:offsets[d + 1]]


def lucene_terms_of(texts: Iterable[str]) -> LuceneTerms:
    """The terms of each text (`lucene_english_tokens`), computed word by word through caches. Exact: UAX #29
    always breaks at a space or a line break (WB3a/b, and WB3d keeps whitespace out of words), and every
    filter after the tokenizer sees one token at a time."""
    local: dict[str, int] = {}
    word_ids: dict[str, tuple[int, ...]] = {}
    ids: list[int] = []
    offsets = [0]
    for text in texts:
        for word in _SPACE_OR_NEWLINE.split(text):
            known = word_ids.get(word)
            if known is None:
                known = word_ids[word] = tuple(local.setdefault(t, len(local)) for t in _word_terms(word))
            ids.extend(known)
        offsets.append(len(ids))
    return LuceneTerms(list(local), np.array(ids, dtype=np.int32), np.array(offsets, dtype=np.int64))


class LuceneBM25Builder:
    """Streams products in index order into the arrays `LuceneBM25Index` reads.

    With `spill_dir`, each batch's postings go to files there as they come, and `save` lays them out
    by term in passes of at most `pass_postings` postings: memory stays flat however many products
    (a 10M-product catalogue has ~150M postings, 1.8 GB in memory). Without it they stay in memory."""

    def __init__(self, spill_dir: str | Path | None = None, pass_postings: int = 16_000_000) -> None:
        self.vocab: dict[str, int] = {}
        self.shops: dict[str, int] = {}
        self._mappings: list[tuple[LuceneTerms, np.ndarray]] = []  # the last chunks' local → index term ids
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (docs, term ids, tfs) per batch
        self._term_postings = np.zeros(0, dtype=np.int64)  # postings per term so far
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._spill: dict[str, Any] = {}
        self._pass_postings = max(1, int(pass_postings))
        self._columns: dict[str, list[np.ndarray]] = {name: [] for name in _DOC_COLUMNS}  # per batch, in memory
        self._doc_count = 0  # documents with at least one term
        self._sum_total_term_freq = 0
        self._ids: list[np.ndarray] = []  # product ids per batch, as fixed-width bytes
        self._n_docs = 0

    def _global_ids(self, terms: LuceneTerms) -> np.ndarray:
        """The index's term id of each of `terms`' local ids. New terms are numbered in the order the
        chunks come, so the ids depend on the chunking, not on which process analysed a chunk."""
        for held, mapping in self._mappings:
            if held is terms:
                return mapping
        vocab = self.vocab
        mapping = np.array([vocab.setdefault(t, len(vocab)) for t in terms.terms], dtype=np.int32)
        self._mappings = [(terms, mapping), *self._mappings[:3]]  # a chunk comes in a few pieces
        return mapping

    def add(self, products: Iterable[dict[str, Any]]) -> None:
        """Index products in order."""
        products = list(products)
        rows = [(str(p["product_id"]), str(p.get("shop_id")), tuple(p.get("service") or ()), float(p["price"]),
                 int(p.get("sold_count") or 0)) for p in products]
        self.add_rows(rows, lucene_terms_of(shoppingbench_contents(p) for p in products))

    def add_rows(self, rows: Sequence[Any], terms: LuceneTerms, start: int = 0) -> None:
        """Index rows in order: each a `PreparedProduct` or a (product_id, shop_id, service, price,
        sold_count) tuple, row i being document `start + i` of `terms`. A batch's term frequencies are
        counted at once with numpy."""
        if not rows:
            return
        first = self._n_docs
        shops = self.shops
        ids: list[str] = []
        prices: list[float] = []
        sold: list[int] = []
        shop: list[int] = []
        service: list[int] = []
        for product_id, shop_id, services, price, sold_count, *_ in rows:
            prices.append(price)
            sold.append(sold_count)
            shop.append(shops.setdefault(shop_id, len(shops)))
            mask = 0
            for s in services:
                mask |= SERVICE_BITS.get(s, 0)
            service.append(mask)
            ids.append(product_id)
        stop = start + len(rows)
        lengths = np.diff(terms.offsets[start: stop + 1])
        term_ids = self._global_ids(terms)[terms.ids[terms.offsets[start]: terms.offsets[stop]]].astype(np.int64)
        self._n_docs += len(rows)
        self._doc_count += int(np.count_nonzero(lengths))
        self._sum_total_term_freq += int(lengths.sum())
        self._ids.append(np.array([i.encode() for i in ids]))
        distinct, of_doc = np.unique(lengths, return_inverse=True)  # encode each distinct length once
        norms = np.array([length_to_norm(int(n)) for n in distinct], dtype=np.uint8)[of_doc.reshape(-1)]
        self._store_columns({"doc_norm": norms, "price": np.array(prices, dtype=np.float64),
                             "sold_count": np.array(sold, dtype=np.int64), "shop": np.array(shop, dtype=np.int32),
                             "service": np.array(service, dtype=np.uint8)})
        docs = np.repeat(np.arange(first, first + len(rows), dtype=np.int64), lengths)
        keys, tfs = np.unique((docs << 32) | term_ids, return_counts=True)
        chunk = ((keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32), tfs.astype(np.int32))
        counts = np.bincount(chunk[1], minlength=len(self.vocab))
        counts[: len(self._term_postings)] += self._term_postings
        self._term_postings = counts
        if self._spill_dir is None:
            self._chunks.append(chunk)
        else:
            for name, values in zip(("docs", "terms", "tfs"), chunk, strict=True):
                values.tofile(self._spill_file(name))

    def _spill_file(self, name: str) -> Any:
        if name not in self._spill:
            self._spill_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            self._spill[name] = (self._spill_dir / f"{name}.bin").open("wb")  # type: ignore[operator]
        return self._spill[name]

    def _store_columns(self, values: dict[str, np.ndarray]) -> None:
        for name, column in values.items():
            if self._spill_dir is None:
                self._columns[name].append(column)
            else:
                column.tofile(self._spill_file(name))

    def _save_column(self, tmp: Path, name: str) -> None:
        """`name`.npy, from memory or streamed from its spill file."""
        dtype = _DOC_COLUMNS[name]
        if self._spill_dir is None or name not in self._spill:
            parts = self._columns[name]
            np.save(tmp / f"{name}.npy", np.concatenate(parts) if parts else np.zeros(0, dtype=dtype))
            return
        self._spill[name].close()
        spilled = self._spill_dir / f"{name}.bin"
        with (tmp / f"{name}.npy").open("wb") as out, spilled.open("rb") as src:
            np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                       "fortran_order": False, "shape": (self._n_docs,)})
            shutil.copyfileobj(src, out, 1 << 22)

    def _spilled_blocks(self, block: int = 4_000_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        paths = [self._spill_dir / f"{name}.bin" for name in ("docs", "terms", "tfs")]  # type: ignore[operator]
        total = paths[0].stat().st_size // 4
        handles = [p.open("rb") for p in paths]
        try:
            for start in range(0, total, block):
                n = min(block, total - start)
                yield tuple(np.fromfile(h, dtype=np.int32, count=n) for h in handles)  # type: ignore[misc]
        finally:
            for h in handles:
                h.close()

    def _write_postings(self, tmp: Path, indptr: np.ndarray) -> None:
        """postings_doc.npy and postings_tf.npy: by term, then by doc."""
        total = int(indptr[-1])
        if self._spill_dir is None:
            empty = np.zeros(0, np.int32)
            docs = np.concatenate([c[0] for c in self._chunks]) if self._chunks else empty
            term_ids = np.concatenate([c[1] for c in self._chunks]) if self._chunks else empty
            tfs = np.concatenate([c[2] for c in self._chunks]) if self._chunks else empty
            self._chunks = []
            order = np.argsort(term_ids, kind="stable")  # by term, then by doc (stable keeps docs ascending)
            np.save(tmp / "postings_doc.npy", docs[order])
            np.save(tmp / "postings_tf.npy", np.minimum(tfs[order], 65535).astype(np.uint16))
            return
        for name in ("docs", "terms", "tfs"):
            self._spill[name].close()
        out = {"doc": (tmp / "postings_doc.npy").open("wb"), "tf": (tmp / "postings_tf.npy").open("wb")}
        for name, dtype in (("doc", np.int32), ("tf", np.uint16)):
            np.lib.format.write_array_header_1_0(
                out[name], {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                            "shape": (total,)})
        n_terms = len(indptr) - 1
        t0 = 0
        while t0 < n_terms:  # one pass per range of terms whose postings fit the budget
            t1 = int(np.searchsorted(indptr, indptr[t0] + self._pass_postings, side="right")) - 1
            t1 = min(max(t1, t0 + 1), n_terms)
            base = int(indptr[t0])
            size = int(indptr[t1]) - base
            doc_out = np.empty(size, dtype=np.int32)
            tf_out = np.empty(size, dtype=np.uint16)
            cursor = indptr[t0:t1] - base  # where each term's next posting goes
            for docs, terms, tfs in self._spilled_blocks():
                keep = (terms >= t0) & (terms < t1)
                if not keep.any():
                    continue
                local = terms[keep] - t0
                order = np.argsort(local, kind="stable")  # blocks come in doc order: docs stay ascending
                local = local[order]
                counts = np.bincount(local, minlength=t1 - t0)
                rank = np.arange(len(local)) - (np.cumsum(counts) - counts)[local]
                where = cursor[local] + rank
                doc_out[where] = docs[keep][order]
                tf_out[where] = np.minimum(tfs[keep][order], 65535)
                cursor = cursor + counts
            doc_out.tofile(out["doc"])
            tf_out.tofile(out["tf"])
            t0 = t1
        for handle in out.values():
            handle.close()

    def save(self, path: str | Path) -> None:
        """Write the index into `path` (replaced as a whole, via a temporary folder and a rename)."""
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        indptr = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        np.cumsum(np.pad(self._term_postings, (0, len(self.vocab) - len(self._term_postings))), out=indptr[1:])
        if self._spill_dir is not None and "docs" not in self._spill:  # nothing was added
            self._spill_dir = None
        self._write_postings(tmp, indptr)
        np.save(tmp / "indptr.npy", indptr)
        for name in _DOC_COLUMNS:
            self._save_column(tmp, name)
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
        product_ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype="S1")
        np.save(tmp / "product_id.npy", product_ids)
        meta = {"format_version": FORMAT_VERSION, "k1": K1, "b": B, "n_docs": self._n_docs,
                "doc_count": self._doc_count, "sum_total_term_freq": self._sum_total_term_freq,
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
    products = iter(products)
    while batch := list(itertools.islice(products, 10_000)):
        builder.add(batch)
    builder.save(path)
