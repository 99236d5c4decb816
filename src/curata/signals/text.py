"""Text signals: normalisation, shingle hashes, MinHash signatures, LSH band keys and word n-grams.

Everything works on whole batches at once.  A batch of texts is encoded into one buffer of Unicode code
points; shingle hashes of every window in the buffer are computed with a handful of vectorised numpy
passes (a multilinear hash over the window followed by the splitmix64 finaliser), windows that cross a
document boundary are never formed.  The per-(shingle, permutation) MinHash work and the per-document
sort/unique run in small numba kernels: that inner loop is ``n_shingles * num_perm`` long and a numpy
version has to write and re-read a ``(chunk, num_perm)`` temporary several times, which measured 4-5x
slower than the compiled loop and could not beat rensa.

Hashes are stable across processes, platforms and runs (no use of Python's salted ``hash``), so
signatures can be cached on disk under :meth:`MinHashSettings.fingerprint`.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import numpy.typing as npt

from curata.errors import ConfigError

__all__ = [
    "ALGORITHM_VERSION",
    "MinHashSettings",
    "band_keys",
    "minhash_signatures",
    "normalize_text",
    "shingle_hashes",
    "word_ngram_hashes",
]

#: Bumped whenever any hash or signature value would change; part of every fingerprint.
ALGORITHM_VERSION = 1

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]

_MASK64 = (1 << 64) - 1
# Enough position constants for any window width a user will sensibly ask for; longer windows and
# longer words reuse constants cyclically (see _POS_TABLE_SIZE use below).
_POS_TABLE_SIZE = 256
_SIGNATURE_EMPTY = np.iinfo(np.uint32).max
# Texts are processed in batches of about this many code points: each numpy pass then touches a few
# MiB (stays in cache) and memory stays bounded on million-document inputs.
_BATCH_CHARS = 1 << 18


def _splitmix64_stream(seed: int, count: int) -> list[int]:
    """Return ``count`` 64-bit values of the splitmix64 generator started at ``seed``."""
    out: list[int] = []
    state = seed & _MASK64
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


# Fixed constants (not user-seeded) so that shingle hashes, and hence exact Jaccard values and n-gram
# overlap between two datasets, never depend on MinHash settings.  Odd values keep each multiplier a
# bijection of the 64-bit ring.
_CHAR_POS = np.array([v | 1 for v in _splitmix64_stream(0xC0A7A001, _POS_TABLE_SIZE)], dtype=np.uint64)
_WINDOW_POS = np.array([v | 1 for v in _splitmix64_stream(0xC0A7A002, _POS_TABLE_SIZE)], dtype=np.uint64)
_BAND_POS = np.array([v | 1 for v in _splitmix64_stream(0xC0A7A003, _POS_TABLE_SIZE)], dtype=np.uint64)
_LEN_MIX, _BAND_MIX, _PERM_SALT = (np.uint64(v | 1) for v in _splitmix64_stream(0xC0A7A004, 3))


def _splitmix64(x: U64) -> U64:
    """Apply the splitmix64 finaliser to every element (returns a new array)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def normalize_text(text: str) -> str:
    """Return ``text`` in Unicode NFKC form, casefolded, with every whitespace run collapsed to one space.

    Leading and trailing whitespace is removed.  ``str.split`` with no argument splits on every Unicode
    whitespace character (tabs, newlines, NBSP after NFKC, ideographic space...), which is what we want.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class MinHashSettings:
    """Parameters of shingling, MinHash and LSH banding for text near-duplicate detection.

    Defaults: character 5-grams, 128 permutations, 21 bands of 6 rows.

    * Character 5-grams keep enough shingles in short texts (a tweet, a fortune, a caption) for the
      Jaccard estimate to be meaningful; word shingles of a 20-word text give only a handful of sets
      elements.  Use ``shingle="word"`` with ``ngram`` 3-5 for long documents when speed matters more.
    * 128 permutations give a standard error of about 0.035 on an estimated Jaccard of 0.8.
    * 21 x 6 banding makes a pair with Jaccard 0.8 a candidate with probability 0.998 (0.93 at 0.7,
      0.28 at 0.5, 0.015 at 0.3): every candidate is verified with the exact Jaccard afterwards, so the
      S-curve is placed well below ``min_jaccard`` to buy recall with cheap verification work.
    """

    shingle: Literal["char", "word"] = "char"
    ngram: int = 5
    num_perm: int = 128
    bands: int = 21
    rows: int = 6
    seed: int = 0
    min_jaccard: float = 0.8

    def __post_init__(self) -> None:
        """Reject values the algorithms cannot use, naming the field and the allowed range."""
        if self.shingle not in ("char", "word"):
            raise ConfigError(f"MinHashSettings.shingle must be 'char' or 'word', got {self.shingle!r}")
        for name in ("ngram", "num_perm", "bands", "rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"MinHashSettings.{name} must be a positive integer, got {value!r}")
        if self.ngram > _POS_TABLE_SIZE:
            raise ConfigError(f"MinHashSettings.ngram must be at most {_POS_TABLE_SIZE}, got {self.ngram}")
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(
                f"MinHashSettings.bands * rows must be <= num_perm, got {self.bands} * {self.rows} = "
                f"{self.bands * self.rows} > {self.num_perm}"
            )
        if self.rows > _POS_TABLE_SIZE:
            raise ConfigError(f"MinHashSettings.rows must be at most {_POS_TABLE_SIZE}, got {self.rows}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= _MASK64:
            raise ConfigError(f"MinHashSettings.seed must be an integer in [0, 2**64), got {seed!r}")
        mj = self.min_jaccard
        if isinstance(mj, bool) or not isinstance(mj, int | float) or not 0.0 < float(mj) <= 1.0:
            raise ConfigError(f"MinHashSettings.min_jaccard must be a number in (0, 1], got {mj!r}")

    def fingerprint(self) -> str:
        """Return a short stable string naming the algorithm version and every setting, for cache keys."""
        return (
            f"minhash-v{ALGORITHM_VERSION}-{self.shingle}{self.ngram}-p{self.num_perm}"
            f"-b{self.bands}r{self.rows}-s{self.seed}-j{float(self.min_jaccard):g}"
        )


# ---------------------------------------------------------------------------------------------------
# Batch encoding and window hashing (numpy)


def _code_points(texts: Sequence[str]) -> tuple[U64, I64]:
    """Return all code points of ``texts`` as one uint64 buffer, and the int64 offsets of each text."""
    n = len(texts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n == 0:
        return np.zeros(0, dtype=np.uint64), offsets
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n), out=offsets[1:])
    # UTF-32 gives one fixed-width unit per code point, so buffer positions equal str indices;
    # surrogatepass keeps lone surrogates (possible in str) from raising.
    raw = "".join(texts).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(raw, dtype=np.uint32).astype(np.uint64), offsets


def _window_hashes(tokens: U64, offsets: I64, width: int, short_whole: bool) -> tuple[U64, I64, I64]:
    """Hash every run of ``width`` consecutive tokens inside each document (duplicates kept).

    The hash is ``splitmix64(sum_j tokens[i+j] * P[j] + width * L)`` in wrapping uint64 arithmetic with
    fixed odd constants ``P`` (a multilinear hash, universal over windows of equal width).  A document
    with fewer than ``width`` (but at least one) tokens yields the hash of all its tokens when
    ``short_whole`` is true, otherwise nothing.

    Returns (values, starts, ends): document d's window hashes are ``values[starts[d]:ends[d]]``.  Windows
    are hashed at every buffer position, including the few that straddle two documents, because
    skipping them would need a gather pass that costs more than the wasted ``width - 1`` hashes per
    document; the straddling ones are simply never inside any [start, end) range.
    """
    lens = np.diff(offsets)
    full = lens >= width
    n_tok = tokens.size
    span = max(n_tok - width + 1, 0)
    starts = offsets[:-1].copy()
    ends = np.where(full, offsets[1:] - width + 1, starts)
    short_docs = np.flatnonzero((lens > 0) & ~full) if short_whole else np.zeros(0, dtype=np.int64)
    values = np.empty(span + short_docs.size, dtype=np.uint64)
    if span:
        acc = values[:span]
        np.multiply(tokens[:span], _WINDOW_POS[0], out=acc)
        tmp = np.empty(span, dtype=np.uint64)
        for j in range(1, width):
            np.multiply(tokens[j : span + j], _WINDOW_POS[j], out=tmp)
            acc += tmp
        acc += _len_term(width)
    if short_docs.size:
        slen = lens[short_docs]
        col = np.arange(width - 1, dtype=np.int64)
        valid = col[None, :] < slen[:, None]
        idx = np.where(valid, offsets[short_docs][:, None] + col[None, :], 0)
        vals = np.where(valid, tokens[idx], np.uint64(0))
        acc_s = (vals * _WINDOW_POS[: width - 1][None, :]).sum(axis=1, dtype=np.uint64)
        acc_s += slen.astype(np.uint64) * _LEN_MIX
        values[span:] = acc_s
        starts[short_docs] = np.arange(span, span + short_docs.size, dtype=np.int64)
        ends[short_docs] = starts[short_docs] + 1
    return _splitmix64(values), starts, ends


def _len_term(length: int) -> np.uint64:
    """Return ``length * L mod 2**64`` as a numpy scalar (computed in Python ints to avoid overflow)."""
    return np.uint64((length * int(_LEN_MIX)) & _MASK64)


def _word_tokens(cps: U64, offsets: I64) -> tuple[U64, I64]:
    """Hash each word (maximal run of non-space code points inside one document) to one uint64.

    Word hash: ``splitmix64(sum_k cp[k] * C[k mod 256] + length * L)`` with position k counted from the
    word start.  Runs of several spaces are tolerated so unnormalised input cannot create empty words.
    """
    n = offsets.size - 1
    word_offsets = np.zeros(n + 1, dtype=np.int64)
    if cps.size == 0:
        return np.zeros(0, dtype=np.uint64), word_offsets
    nonspace = cps != np.uint64(32)
    prev_space = np.ones(cps.size, dtype=bool)
    prev_space[1:] = ~nonspace[:-1]
    doc_starts = offsets[:-1][offsets[:-1] < offsets[1:]]
    prev_space[doc_starts] = True  # a word never continues across a document boundary
    is_start = nonspace & prev_space
    start_pos = np.flatnonzero(is_start)
    if start_pos.size == 0:
        return np.zeros(0, dtype=np.uint64), word_offsets
    word_id = np.cumsum(is_start) - 1
    keep = np.flatnonzero(nonspace)
    wid = word_id[keep]
    pos_in_word = keep - start_pos[wid]
    terms = cps[keep] * _CHAR_POS[pos_in_word % _POS_TABLE_SIZE]
    # Words are contiguous runs in `keep`, so each word's first index in `keep` is where wid changes.
    first = np.zeros(start_pos.size, dtype=np.int64)
    first[1:] = np.flatnonzero(np.diff(wid)) + 1
    acc = np.add.reduceat(terms, first).astype(np.uint64)
    wlen = np.diff(np.append(first, keep.size)).astype(np.uint64)
    words = _splitmix64(acc + wlen * _LEN_MIX)
    doc_of_word = np.searchsorted(offsets, start_pos, side="right") - 1
    np.cumsum(np.bincount(doc_of_word, minlength=n), out=word_offsets[1:])
    return words, word_offsets


def _raw_shingles(texts: Sequence[str], settings: MinHashSettings) -> tuple[U64, I64, I64]:
    """Return every shingle hash of every text (duplicates kept) as (values, starts, ends) ranges."""
    cps, offsets = _code_points(texts)
    if settings.shingle == "char":
        return _window_hashes(cps, offsets, settings.ngram, short_whole=True)
    words, word_offsets = _word_tokens(cps, offsets)
    return _window_hashes(words, word_offsets, settings.ngram, short_whole=True)


# ---------------------------------------------------------------------------------------------------
# Compiled kernels


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _sort_unique_segments(values: U64, starts: I64, ends: I64) -> tuple[U64, I64]:  # pragma: no cover
    """Sort each ``values[starts[d]:ends[d]]`` and drop repeats; returns compacted values and offsets."""
    n = starts.size
    out = np.empty(values.size, dtype=np.uint64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    w = 0
    for d in range(n):
        lo = starts[d]
        hi = ends[d]
        if hi > lo:
            seg = out[w : w + hi - lo]
            seg[:] = values[lo:hi]
            seg.sort()
            keep = 1
            for i in range(1, seg.size):
                if seg[i] != seg[keep - 1]:
                    seg[keep] = seg[i]
                    keep += 1
            w += keep
        offsets[d + 1] = w
    return out[:w].copy(), offsets


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _minhash_kernel(keys: U32, starts: I64, ends: I64, a: U64, b: U64, out: U32) -> None:  # pragma: no cover
    """Fill ``out[d, j]`` with the min over doc d's 32-bit keys x of ``(a[j] * x + b[j]) mod 2**64 >> 32``.

    Keys are 32-bit on purpose: a 64x32-bit product maps to AVX2's native 32x32->64 multiplies, which
    measured 4.5x faster than a full 64x64-bit product, and multiply-add-shift with 64-bit a, b is a
    proper 2-universal family on 32-bit keys.
    """
    n = starts.size
    k = a.size
    shift = np.uint64(32)
    for d in range(n):
        row = out[d]
        for s in range(starts[d], ends[d]):
            x = np.uint64(keys[s])
            for j in range(k):
                v = np.uint32((a[j] * x + b[j]) >> shift)
                row[j] = min(row[j], v)


def _batches(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Split ``texts`` into consecutive [lo, hi) ranges of about ``_BATCH_CHARS`` code points each."""
    n = len(texts)
    if n == 0:
        return []
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n))
    cuts = np.searchsorted(ends, np.arange(_BATCH_CHARS, int(ends[-1]), _BATCH_CHARS), side="right")
    bounds = np.unique(np.concatenate(([0], cuts, [n])))
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds.tolist()) if hi > lo]


# ---------------------------------------------------------------------------------------------------
# Public API


def shingle_hashes(texts: Sequence[str], settings: MinHashSettings) -> tuple[U64, I64]:
    """Return the unique shingle hashes of every text as (hashes uint64 1-D, offsets int64 of len n + 1).

    ``texts`` must already be normalised (:func:`normalize_text`).  Text i's shingle set is
    ``hashes[offsets[i]:offsets[i + 1]]``, sorted ascending with no repeats (``jaccard_of_pairs`` relies
    on that).  A text shorter than one shingle gets one shingle made of the whole text; the empty string
    gets none.  Char shingles are windows of ``ngram`` code points (spaces included); word shingles are
    windows of ``ngram`` space-separated words.  Values do not depend on ``seed`` or the banding.
    """
    parts: list[U64] = []
    counts: list[I64] = []
    for lo, hi in _batches(texts):
        values, starts, ends = _raw_shingles(texts[lo:hi], settings)
        hashes, offsets = _sort_unique_segments(values, starts, ends)
        parts.append(hashes)
        counts.append(np.diff(offsets))
    return _join_parts(parts, counts)


def _join_parts(parts: list[U64], counts: list[I64]) -> tuple[U64, I64]:
    """Concatenate per-batch (hashes, per-doc counts) into one (hashes, offsets) pair."""
    all_counts = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(all_counts.size + 1, dtype=np.int64)
    np.cumsum(all_counts, out=offsets[1:])
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return hashes, offsets


def _permutations(settings: MinHashSettings) -> tuple[U64, U64]:
    """Return the multiply-shift parameters (odd a, any b) of the ``num_perm`` hash permutations."""
    stream = _splitmix64_stream(settings.seed ^ int(_PERM_SALT), 2 * settings.num_perm)
    a = np.array([v | 1 for v in stream[0::2]], dtype=np.uint64)
    b = np.array(stream[1::2], dtype=np.uint64)
    return a, b


def minhash_signatures(texts: Sequence[str], settings: MinHashSettings) -> U32:
    """Return MinHash signatures of normalised ``texts`` as a (n, num_perm) uint32 array.

    Permutation j maps the top 32 bits x of a shingle hash to ``(a_j * x + b_j) mod 2**64 >> 32``
    (Dietzfelbinger's multiply-add-shift); the signature keeps the minimum per permutation.  The
    fraction of equal columns of two rows estimates the Jaccard similarity of the two shingle sets.
    Rows of empty texts are all ``2**32 - 1``.  Identical texts always get identical rows, in any batch
    and any process.
    """
    a, b = _permutations(settings)
    out = np.full((len(texts), settings.num_perm), _SIGNATURE_EMPTY, dtype=np.uint32)
    for lo, hi in _batches(texts):
        values, starts, ends = _raw_shingles(texts[lo:hi], settings)
        # The top 32 bits of a splitmix64 output are as uniform as any 32 bits of it, and 2**32 distinct
        # keys are plenty for sets of millions of shingles.  Duplicate shingles cannot change a
        # minimum, so the per-document sort/unique of shingle_hashes is skipped here.
        keys = (values >> np.uint64(32)).astype(np.uint32)
        _minhash_kernel(keys, starts, ends, a, b, out[lo:hi])
    return out


def band_keys(signatures: npt.NDArray[np.unsignedinteger], settings: MinHashSettings) -> U64:
    """Hash each band of ``rows`` signature columns to one uint64; returns a (n, bands) array.

    Band i covers columns ``i * rows .. (i + 1) * rows - 1``; the band index is mixed into the key so
    equal keys in different bands are (with overwhelming probability) never equal.
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2 or sig.shape[1] < settings.bands * settings.rows:
        raise ConfigError(
            f"signatures must have shape (n, >= {settings.bands * settings.rows}), got {sig.shape}"
        )
    n = sig.shape[0]
    used = sig[:, : settings.bands * settings.rows].astype(np.uint64)
    used = used.reshape(n, settings.bands, settings.rows)
    acc = (used * _BAND_POS[: settings.rows]).sum(axis=2, dtype=np.uint64)
    acc += np.arange(settings.bands, dtype=np.uint64) * _BAND_MIX
    return _splitmix64(acc)


def word_ngram_hashes(texts: Sequence[str], n: int) -> tuple[U64, I64]:
    """Return unique hashes of every run of ``n`` consecutive words, as (hashes, offsets) per text.

    Used for n-gram overlap contamination checks (the GPT-3 paper's 13-gram rule).  ``texts`` must be
    normalised; words are separated by spaces.  Texts with fewer than ``n`` words give no n-grams.
    Hash values match the ``shingle="word", ngram=n`` shingles of :func:`shingle_hashes` for texts that
    have at least ``n`` words, and are sorted and unique per text.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= _POS_TABLE_SIZE:
        raise ConfigError(f"word n-gram length must be an integer in [1, {_POS_TABLE_SIZE}], got {n!r}")
    parts: list[U64] = []
    counts: list[I64] = []
    for lo, hi in _batches(texts):
        cps, offsets = _code_points(texts[lo:hi])
        words, word_offsets = _word_tokens(cps, offsets)
        values, starts, ends = _window_hashes(words, word_offsets, int(n), short_whole=False)
        hashes, uoffsets = _sort_unique_segments(values, starts, ends)
        parts.append(hashes)
        counts.append(np.diff(uoffsets))
    return _join_parts(parts, counts)
