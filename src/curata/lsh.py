"""LSH banding: candidate pairs from band keys, and exact Jaccard verification of candidate pairs.

Candidate generation sorts each band column once and emits pairs inside runs of equal keys, so the
work is O(n log n) per band plus the number of pairs emitted.  A bucket (run of equal keys) larger than
``max_bucket`` does not emit all its s * (s - 1) / 2 pairs: it emits a *star* (its lowest row paired
with every other member) plus a *chain* (consecutive members, in row order, paired).  That is 2s - 3
pairs, keeps every member connected to the bucket after verification unless two members on both sides
of it fail, and caps the cost of 10k identical texts at about 20k pairs instead of 50M.  Huge buckets
almost always hold exact or templated copies, which downstream clustering (union-find over verified
pairs) joins into one group either way; pair-level recall inside such buckets is deliberately given up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import numpy.typing as npt

from curata.errors import ConfigError
from curata.signals.text import MinHashSettings, band_keys, minhash_signatures, shingle_hashes

__all__ = [
    "DEFAULT_MAX_BUCKET",
    "candidate_pairs",
    "cross_candidate_pairs",
    "jaccard_of_pairs",
    "near_duplicate_pairs",
]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

#: Buckets up to this size emit all their pairs (at most 19,900 each); larger ones a star plus a chain.
DEFAULT_MAX_BUCKET = 200


def _ranges(starts: I64, counts: I64) -> I64:
    """Concatenate ``arange(s, s + c)`` for every (s, c) without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_starts = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=seg_starts[1:])
    return np.arange(total, dtype=np.int64) + np.repeat(starts - seg_starts, counts)


def _check_keys(keys: npt.ArrayLike, name: str) -> npt.NDArray[np.generic]:
    """Return ``keys`` as a 2-D array or raise ConfigError naming the argument."""
    arr = np.asarray(keys)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D (rows, bands) array, got shape {arr.shape}")
    return arr


def _unique_pairs(left: I64, right: I64, n_right: int) -> I64:
    """Return the distinct (left, right) pairs as a sorted (m, 2) int64 array."""
    if left.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    # One int64 code per pair makes dedup a single 1-D sort; n_left * n_right stays far below 2**63.
    codes = np.unique(left * np.int64(n_right) + right)
    return np.stack([codes // n_right, codes % n_right], axis=1).astype(np.int64)


def candidate_pairs(band_keys: npt.ArrayLike, max_bucket: int = DEFAULT_MAX_BUCKET) -> I64:
    """Return the (m, 2) int64 pairs of rows that share a key in the same band column.

    Pairs have ``i < j``, are unique and sorted.  Buckets of at most ``max_bucket`` rows emit every pair;
    larger buckets emit a star from their lowest row plus a chain over consecutive rows (see the module
    docstring), so the output stays linear in n however many rows collide.
    """
    keys = _check_keys(band_keys, "band_keys")
    if isinstance(max_bucket, bool) or not isinstance(max_bucket, int | np.integer) or max_bucket < 2:
        raise ConfigError(f"max_bucket must be an integer >= 2, got {max_bucket!r}")
    n = keys.shape[0]
    lefts: list[I64] = []
    rights: list[I64] = []
    for col in range(keys.shape[1]):
        column = keys[:, col]
        # A stable sort keeps each bucket's rows ascending, so the first member is the lowest row.
        order = np.argsort(column, kind="stable").astype(np.int64)
        ordered = column[order]
        is_start = np.ones(n, dtype=bool)
        is_start[1:] = ordered[1:] != ordered[:-1]
        bstart = np.flatnonzero(is_start)
        bsize = np.diff(np.append(bstart, n))
        small = (bsize >= 2) & (bsize <= max_bucket)
        if small.any():
            s_start, s_size = bstart[small], bsize[small]
            pos = _ranges(s_start, s_size)
            local = pos - np.repeat(s_start, s_size)
            partners = np.repeat(s_size, s_size) - 1 - local
            left_pos = np.repeat(pos, partners)
            right_pos = left_pos + 1 + _ranges(np.zeros(partners.size, dtype=np.int64), partners)
            lefts.append(order[left_pos])
            rights.append(order[right_pos])
        big = bsize > max_bucket
        if big.any():
            b_start, b_size = bstart[big], bsize[big]
            members = _ranges(b_start + 1, b_size - 1)  # every member but the first
            hubs = np.repeat(b_start, b_size - 1)
            lefts.append(order[hubs])  # star
            rights.append(order[members])
            lefts.append(order[members[members - 1 != hubs] - 1])  # chain, minus links the star has
            rights.append(order[members[members - 1 != hubs]])
    if not lefts:
        return np.zeros((0, 2), dtype=np.int64)
    left = np.concatenate(lefts)
    right = np.concatenate(rights)
    return _unique_pairs(np.minimum(left, right), np.maximum(left, right), max(n, 1))


def cross_candidate_pairs(
    keys_a: npt.ArrayLike, keys_b: npt.ArrayLike, max_bucket: int = DEFAULT_MAX_BUCKET
) -> I64:
    """Return the (m, 2) int64 pairs [row in a, row in b] that share a key in the same band column.

    Unique and sorted.  When a key is held by more than ``max_bucket`` rows of a and b together, only
    a star in each direction is emitted (every a-row with the key's lowest b-row, every b-row with the
    key's lowest a-row), so every row that shares the key still gets at least one partner to verify.
    """
    ka = _check_keys(keys_a, "keys_a")
    kb = _check_keys(keys_b, "keys_b")
    if ka.shape[1] != kb.shape[1]:
        raise ConfigError(
            f"keys_a and keys_b need the same number of bands, got {ka.shape[1]} and {kb.shape[1]}"
        )
    if isinstance(max_bucket, bool) or not isinstance(max_bucket, int | np.integer) or max_bucket < 2:
        raise ConfigError(f"max_bucket must be an integer >= 2, got {max_bucket!r}")
    n_a, n_b = ka.shape[0], kb.shape[0]
    lefts: list[I64] = []
    rights: list[I64] = []
    if n_a == 0 or n_b == 0:
        return np.zeros((0, 2), dtype=np.int64)
    for col in range(ka.shape[1]):
        col_a, col_b = ka[:, col], kb[:, col]
        uniq_a, first_a, inv_a, count_a = np.unique(
            col_a, return_index=True, return_inverse=True, return_counts=True
        )
        order_b = np.argsort(col_b, kind="stable").astype(np.int64)
        sorted_b = col_b[order_b]
        lo = np.searchsorted(sorted_b, col_a, side="left").astype(np.int64)
        cnt = np.searchsorted(sorted_b, col_a, side="right").astype(np.int64) - lo
        big_a = count_a[inv_a] + cnt > max_bucket
        small_a = np.flatnonzero(~big_a & (cnt > 0))
        if small_a.size:
            lefts.append(np.repeat(small_a, cnt[small_a]))
            rights.append(order_b[_ranges(lo[small_a], cnt[small_a])])
        star_a = np.flatnonzero(big_a & (cnt > 0))
        if star_a.size:
            lefts.append(star_a)
            rights.append(order_b[lo[star_a]])  # lowest b-row of the key (stable sort)
            # Every b-row of these big keys pairs with the key's lowest a-row.
            big_keys = np.unique(inv_a[star_a])
            kb_pos = np.searchsorted(uniq_a, col_b)
            kb_pos_clipped = np.minimum(kb_pos, uniq_a.size - 1)
            in_big = np.zeros(uniq_a.size, dtype=bool)
            in_big[big_keys] = True
            b_rows = np.flatnonzero((uniq_a[kb_pos_clipped] == col_b) & in_big[kb_pos_clipped])
            lefts.append(first_a[kb_pos_clipped[b_rows]].astype(np.int64))
            rights.append(b_rows)
    if not lefts:
        return np.zeros((0, 2), dtype=np.int64)
    return _unique_pairs(np.concatenate(lefts), np.concatenate(rights), n_b)


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _jaccard_kernel(hashes: U64, offsets: I64, pairs: I64, out: F64) -> None:  # pragma: no cover
    """Merge the two sorted unique segments of each pair and write |A & B| / |A | B| into ``out``."""
    for p in range(pairs.shape[0]):
        i = pairs[p, 0]
        j = pairs[p, 1]
        a, a_end = offsets[i], offsets[i + 1]
        b, b_end = offsets[j], offsets[j + 1]
        size = (a_end - a) + (b_end - b)
        inter = 0
        while a < a_end and b < b_end:
            x = hashes[a]
            y = hashes[b]
            if x == y:
                inter += 1
                a += 1
                b += 1
            elif x < y:
                a += 1
            else:
                b += 1
        union = size - inter
        out[p] = inter / union if union > 0 else 0.0


def jaccard_of_pairs(hashes: npt.ArrayLike, offsets: npt.ArrayLike, pairs: npt.ArrayLike) -> F64:
    """Return the exact Jaccard similarity of the shingle sets of each pair, as float64.

    ``hashes`` and ``offsets`` are as returned by :func:`curata.signals.text.shingle_hashes` (each
    document's hashes sorted and unique, which the linear merge relies on).  Two empty sets get 0.0:
    empty texts are never near-duplicates here, an exact-duplicate check reports them.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    pr = np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pr.size and (pr.min() < 0 or pr.max() >= off.size - 1):
        raise ConfigError(f"pairs index rows outside [0, {off.size - 1})")
    out = np.zeros(pr.shape[0], dtype=np.float64)
    _jaccard_kernel(h, off, pr, out)
    return out


def near_duplicate_pairs(texts: Sequence[str], settings: MinHashSettings) -> tuple[I64, F64]:
    """Return verified near-duplicate pairs of normalised ``texts`` and their exact Jaccard values.

    Pipeline: MinHash signatures -> band keys -> :func:`candidate_pairs` -> exact Jaccard of the
    candidates' shingle sets -> keep pairs with Jaccard >= ``settings.min_jaccard``.  Shingle sets are
    built only for texts that appear in some candidate pair.
    """
    sigs = minhash_signatures(texts, settings)
    cands = candidate_pairs(band_keys(sigs, settings))
    if cands.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    involved = np.unique(cands)
    hashes, offsets = shingle_hashes([texts[int(i)] for i in involved], settings)
    local = np.searchsorted(involved, cands)
    jac = jaccard_of_pairs(hashes, offsets, local)
    keep = jac >= settings.min_jaccard
    return cands[keep], jac[keep]
