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

import itertools
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from curata import outofcore
from curata.errors import ConfigError
from curata.signals.text import MinHashSettings, band_keys, minhash_signatures, shingle_hashes

__all__ = [
    "DEFAULT_MAX_BUCKET",
    "candidate_pairs",
    "connected_labels",
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

    Up to ``OutOfCoreSettings.max_in_memory_keys`` keys (rows x bands) the buckets are formed in numpy;
    above it, in DuckDB (see :func:`_candidate_pairs_duckdb`), which spills to disk, so memory beyond
    the keys themselves and the result stays bounded by ``OutOfCoreSettings.chunk_rows``.  Both paths
    return identical pairs.
    """
    keys = _check_keys(band_keys, "band_keys")
    if isinstance(max_bucket, bool) or not isinstance(max_bucket, int | np.integer) or max_bucket < 2:
        raise ConfigError(f"max_bucket must be an integer >= 2, got {max_bucket!r}")
    settings = outofcore.current()
    if keys.size > settings.max_in_memory_keys and keys.shape[0] >= 2 and _duckdb_key_type(keys) is not None:
        return _candidate_pairs_duckdb(keys, int(max_bucket), settings)
    return _candidate_pairs_numpy(keys, int(max_bucket))


def _small_bucket_pairs(rows: I64, starts: I64, sizes: I64) -> tuple[I64, I64]:
    """Every pair inside each run ``rows[s : s + size]`` (rows ascending inside a run)."""
    pos = _ranges(starts, sizes)
    local = pos - np.repeat(starts, sizes)
    partners = np.repeat(sizes, sizes) - 1 - local
    left_pos = np.repeat(pos, partners)
    right_pos = left_pos + 1 + _ranges(np.zeros(partners.size, dtype=np.int64), partners)
    return rows[left_pos], rows[right_pos]


def _candidate_pairs_numpy(keys: npt.NDArray[np.generic], max_bucket: int) -> I64:
    """In-memory candidate pairs: one stable sort per band column, one int64 code per emitted pair."""
    n = keys.shape[0]
    codes: list[I64] = []
    width = np.int64(max(n, 1))
    for col in range(keys.shape[1]):
        column = keys[:, col]
        # A stable sort keeps each bucket's rows ascending, so the first member is the lowest row.
        order = np.argsort(column, kind="stable").astype(np.int64)
        ordered = column[order]
        is_start = np.ones(n, dtype=bool)
        is_start[1:] = ordered[1:] != ordered[:-1]
        bstart = np.flatnonzero(is_start)
        bsize = np.diff(np.append(bstart, n))
        del ordered, is_start
        small = (bsize >= 2) & (bsize <= max_bucket)
        if small.any():
            left, right = _small_bucket_pairs(order, bstart[small], bsize[small])
            codes.append(np.minimum(left, right) * width + np.maximum(left, right))
        big = bsize > max_bucket
        if big.any():
            b_start, b_size = bstart[big], bsize[big]
            members = _ranges(b_start + 1, b_size - 1)  # every member but the first
            hubs = np.repeat(b_start, b_size - 1)
            chain = members[members - 1 != hubs]  # chain links, minus those the star has
            for left, right in ((order[hubs], order[members]), (order[chain - 1], order[chain])):
                codes.append(np.minimum(left, right) * width + np.maximum(left, right))
    if not codes:
        return np.zeros((0, 2), dtype=np.int64)
    unique = np.unique(np.concatenate(codes))
    del codes
    return np.stack([unique // width, unique % width], axis=1).astype(np.int64)


def _duckdb_key_type(keys: npt.NDArray[np.generic]) -> str | None:
    """DuckDB type of a band key column, or None when the dtype is not an integer (numpy path then)."""
    kind = keys.dtype.kind
    if kind == "u":
        return {1: "UTINYINT", 2: "USMALLINT", 4: "UINTEGER", 8: "UBIGINT"}.get(keys.dtype.itemsize)
    if kind == "i":
        return {1: "TINYINT", 2: "SMALLINT", 4: "INTEGER", 8: "BIGINT"}.get(keys.dtype.itemsize)
    return None


def _key_entries(keys: npt.NDArray[np.generic], rows_per_batch: int, bands: range) -> pa.RecordBatchReader:
    """Stream the (band, key, row) entries of ``keys`` for ``bands``, ``rows_per_batch`` rows of one
    band at a time.

    Keys of at most 32 bits are packed with their band into one UBIGINT ``bk`` (a single-column
    group-by is much cheaper in DuckDB); wider keys travel as (band, key).
    """
    n = keys.shape[0]
    packed = keys.dtype.kind == "u" and keys.dtype.itemsize <= 4
    row_type = pa.uint32() if n < 2**32 else pa.uint64()
    if packed:
        schema = pa.schema([("bk", pa.uint64()), ("row", row_type)])
    else:
        schema = pa.schema(
            [("band", pa.uint32()), ("key", pa.from_numpy_dtype(keys.dtype)), ("row", row_type)]
        )

    def batches() -> Iterator[pa.RecordBatch]:
        for lo in range(0, n, rows_per_batch):
            hi = min(n, lo + rows_per_batch)
            rows = pa.array(np.arange(lo, hi, dtype=row_type.to_pandas_dtype()))
            columns = [np.ascontiguousarray(keys[lo:hi, b]) for b in bands]
            outofcore.release_rows(keys, lo, hi)  # keys spilled to a file: keep only this chunk
            for b, column in zip(bands, columns, strict=True):
                outofcore.record(hi - lo)
                if packed:
                    bk = (np.uint64(b) << np.uint64(32)) | column.astype(np.uint64)
                    yield pa.record_batch([pa.array(bk), rows], schema=schema)
                else:
                    band = pa.array(np.full(hi - lo, b, dtype=np.uint32))
                    yield pa.record_batch([band, pa.array(column), rows], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


#: Bytes DuckDB's sort needs per (band, key, row) entry, to size the bands sent per query.
_DUCKDB_ENTRY_BYTES = 32


class _BucketStream:
    """Turns (bucket key, row) entries sorted by key then row, read in chunks, into candidate pairs
    with exactly the in-memory rules: every pair of a bucket of at most ``max_bucket`` rows; a star
    from the bucket's lowest row plus a chain over consecutive rows otherwise.

    A chunk may end inside a bucket.  While that bucket has at most ``max_bucket`` rows so far, its
    rows are carried into the next chunk (so at most ``max_bucket`` rows are carried); once larger
    it is known to be big and is emitted as it streams, carrying only its key, lowest row and last
    row.  Pairs are emitted in slices of about ``chunk_rows`` pairs.
    """

    def __init__(self, max_bucket: int, chunk_rows: int) -> None:
        self.max_bucket = max_bucket
        self.chunk_rows = chunk_rows
        self.carry: list[npt.NDArray[Any]] | None = None
        self.big: tuple[tuple[Any, ...], int, int] | None = None  # (key, hub, last row) of a big bucket

    def feed(self, columns: list[npt.NDArray[Any]], final: bool) -> Iterator[tuple[I64, I64]]:
        """Consume one chunk, ``columns`` = [*bucket key columns, row]; yield (left, right) arrays."""
        columns = self._drop_single_rows(columns)
        if self.carry is not None:
            columns = [np.concatenate([c, x]) for c, x in zip(self.carry, columns, strict=True)]
            self.carry = None
        *key_cols, rows = columns
        length = rows.size
        if length == 0:
            return
        is_start = np.zeros(length, dtype=bool)
        is_start[0] = True
        for k in key_cols:
            is_start[1:] |= k[1:] != k[:-1]
        starts = np.flatnonzero(is_start)
        counts = np.diff(np.append(starts, length))
        big_state = self.big
        cont = big_state is not None and tuple(k[0] for k in key_cols) == big_state[0]
        self.big = None
        if not final and not (cont and starts.size == 1) and counts[-1] <= self.max_bucket:
            cut = int(starts[-1])  # the last bucket may go on in the next chunk: carry it
            self.carry = [c[cut:] for c in columns]
            starts, counts = starts[:-1], counts[:-1]
            if starts.size == 0:
                return
        big = counts > self.max_bucket
        hubs = rows[starts]
        link: tuple[int, int] | None = None
        if cont:
            assert big_state is not None
            big[0] = True
            hubs[0] = big_state[1]
            if big_state[2] != big_state[1]:  # the chain link across the chunk boundary
                link = (big_state[2], int(rows[0]))
        if not final and big[-1]:
            last = int(starts[-1])
            self.big = (tuple(k[last] for k in key_cols), int(hubs[-1]), int(rows[last + counts[-1] - 1]))
        # Pairs each bucket emits: s(s-1)/2 for a small one, at most 2 per row for a big one.
        cost = np.where(big, 2 * counts, counts * (counts - 1) // 2)
        cum = np.cumsum(cost)
        cuts = np.searchsorted(cum, np.arange(self.chunk_rows, int(cum[-1]), self.chunk_rows), side="right")
        bounds = np.unique(np.concatenate([[0], cuts, [starts.size]]))
        for a, b in itertools.pairwise(bounds.tolist()):
            if b > a:
                yield from self._emit(
                    rows, starts[a:b], counts[a:b], big[a:b], hubs[a:b], link if a == 0 else None
                )

    @staticmethod
    def _drop_single_rows(columns: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Drop the rows that are a whole bucket by themselves (most rows: they pair with nothing).

        The chunk's first and last buckets are kept whatever their size here: they may go on in the
        previous or next chunk.
        """
        *key_cols, rows = columns
        length = rows.size
        if length <= 2:
            return columns
        same_next = np.ones(length, dtype=bool)  # row i has the key of row i + 1
        same_prev = np.ones(length, dtype=bool)  # row i has the key of row i - 1
        for k in key_cols:
            eq = k[1:] == k[:-1]
            same_next[:-1] &= eq
            same_prev[1:] &= eq
        same_next[-1] = False
        same_prev[0] = False
        keep = same_next | same_prev
        keep[0] = keep[-1] = True
        if keep.all():
            return columns
        return [c[keep] for c in columns]

    @staticmethod
    def _emit(
        rows: I64,
        starts: I64,
        counts: I64,
        big: npt.NDArray[np.bool_],
        hubs: I64,
        link: tuple[int, int] | None,
    ) -> Iterator[tuple[I64, I64]]:
        small = ~big
        if small.any():
            left, right = _small_bucket_pairs(rows, starts[small], counts[small])
            if left.size:
                yield left, right
        if big.any():
            b_start, b_count = starts[big], counts[big]
            pos = _ranges(b_start, b_count)
            members = rows[pos]
            hub_of = np.repeat(hubs[big], b_count)
            star = members != hub_of
            not_first = pos != np.repeat(b_start, b_count)
            chain_left = rows[pos[not_first] - 1]
            keep = chain_left != hub_of[not_first]  # links the star already has
            lefts = [hub_of[star], chain_left[keep]]
            rights = [members[star], members[not_first][keep]]
            if link is not None:
                lefts.append(np.array([link[0]], dtype=np.int64))
                rights.append(np.array([link[1]], dtype=np.int64))
            yield np.concatenate(lefts), np.concatenate(rights)


def _candidate_pairs_duckdb(
    keys: npt.NDArray[np.generic], max_bucket: int, settings: outofcore.OutOfCoreSettings
) -> I64:
    """Candidate pairs with the buckets formed out of core in DuckDB; identical to the numpy path.

    1. The (band, key, row) entries of a few bands (as many as DuckDB sorts within its memory
       limit; past it DuckDB spills) stream into DuckDB, sorted by (band, key, row), and come back
       in chunks; numpy turns each chunk's buckets into pairs (``_BucketStream``) and writes them
       to Parquet spill files.  Then the next bands.  (A sort beat a group-by keeping the buckets
       of two or more rows plus a join back to their rows by 3x: almost every bucket is one row.)
    2. DuckDB drops the pairs found in several bands (DISTINCT) and returns them sorted, in chunks,
       into the result array.
    """
    import pyarrow.parquet as pq

    n, n_bands = keys.shape
    chunk = settings.chunk_rows
    packed = keys.dtype.kind == "u" and keys.dtype.itemsize <= 4
    key_sel = "bk" if packed else "band, key"
    # Bands go through DuckDB a few at a time, as many as it sorts within its memory limit.
    per_query = max(1, min(n_bands, settings.memory_limit_mib * 2**20 // (_DUCKDB_ENTRY_BYTES * max(n, 1))))
    with outofcore.duckdb_connection(settings, "lsh") as (con, folder):
        spill = folder / "pairs"
        spill.mkdir()
        pending: list[tuple[I64, I64]] = []
        pending_rows = 0
        files = 0

        def flush() -> None:
            nonlocal pending, pending_rows, files
            if not pending:
                return
            left = np.concatenate([p[0] for p in pending])
            right = np.concatenate([p[1] for p in pending])
            outofcore.record(left.size)
            # Uncompressed: these files live for seconds; compressing them cost more than the sort.
            pq.write_table(
                pa.table({"i": left, "j": right}), spill / f"p{files:06d}.parquet", compression="none"
            )
            files += 1
            pending, pending_rows = [], 0

        for first in range(0, n_bands, per_query):
            bands = range(first, min(n_bands, first + per_query))
            con.register("entries", _key_entries(keys, chunk, bands))
            sorted_rows = con.sql(
                f"SELECT {key_sel}, row::BIGINT AS row FROM entries ORDER BY {key_sel}, row"
            )
            stream = _BucketStream(max_bucket, chunk)
            batches = iter(sorted_rows.to_arrow_reader(chunk))
            batch = next(batches, None)
            while batch is not None:
                following = next(batches, None)
                outofcore.record(batch.num_rows)
                cols = [np.asarray(c.to_numpy(zero_copy_only=False)) for c in batch.columns]
                cols[-1] = cols[-1].astype(np.int64, copy=False)
                for pair in stream.feed(cols, final=following is None):
                    pending.append(pair)
                    pending_rows += pair[0].size
                    if pending_rows >= chunk:
                        flush()
                batch = following
            con.unregister("entries")
        flush()
        if files == 0:
            return np.zeros((0, 2), dtype=np.int64)
        glob = (spill / "*.parquet").as_posix()
        con.execute(f"CREATE TABLE pairs AS SELECT DISTINCT i, j FROM read_parquet('{glob}')")
        shutil.rmtree(spill, ignore_errors=True)
        m = int(con.execute("SELECT count(*) FROM pairs").fetchall()[0][0])
        # File-backed past max_in_memory_rows pairs, written and handed back chunk by chunk.
        out = outofcore.row_array(m, np.int64, settings, width=2)
        pos = 0
        for part in con.sql("SELECT i, j FROM pairs ORDER BY i, j").to_arrow_reader(chunk):
            k = part.num_rows
            outofcore.record(k)
            out[pos : pos + k, 0] = part.column(0).to_numpy()
            out[pos : pos + k, 1] = part.column(1).to_numpy()
            outofcore.release_rows(out, pos, pos + k)
            pos += k
    if n and m and out[-1, 1] >= n:  # pragma: no cover - a broken invariant, not a user error
        raise AssertionError("candidate pair row out of range")
    return out


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


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _union_find_kernel(pairs: I64, parent: I64) -> None:  # pragma: no cover
    """Union the two ends of every pair (union by smaller root, path halving)."""
    for p in range(pairs.shape[0]):
        a = pairs[p, 0]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        b = pairs[p, 1]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b
    for i in range(parent.size):
        parent[i] = parent[parent[i]]


def connected_labels(n: int, pairs: npt.ArrayLike) -> I64:
    """Label each of ``n`` nodes with the lowest node of its connected component over ``pairs``.

    A union-find over the pairs in one pass: memory is the n labels, whatever the number of pairs.
    """
    pr = np.asarray(pairs)
    # int32 pairs are used as they are (no int64 copy of a large pair array).
    pr = np.ascontiguousarray(pr, dtype=pr.dtype if pr.dtype in (np.int32, np.int64) else np.int64).reshape(
        -1, 2
    )
    if pr.size and (pr.min() < 0 or pr.max() >= n):
        raise ConfigError(f"pairs index nodes outside [0, {n})")
    # File-backed past max_in_memory_rows nodes (an ``outofcore.row_array``).
    parent = outofcore.row_array(n, np.int64)
    for lo, hi in outofcore.row_chunks(n):
        parent[lo:hi] = np.arange(lo, hi)
    _union_find_kernel(pr, np.asarray(parent))
    return parent


def jaccard_of_pairs(hashes: npt.ArrayLike, offsets: npt.ArrayLike, pairs: npt.ArrayLike) -> F64:
    """Return the exact Jaccard similarity of the shingle sets of each pair, as float64.

    ``hashes`` and ``offsets`` are as returned by :func:`curata.signals.text.shingle_hashes` (each
    document's hashes sorted and unique, which the linear merge relies on).  Two empty sets get 0.0:
    empty texts are never near-duplicates here, an exact-duplicate check reports them.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    pr = np.asarray(pairs)
    # int32 pairs are used as they are (no int64 copy of a large pair array).
    pr = np.ascontiguousarray(pr, dtype=pr.dtype if pr.dtype in (np.int32, np.int64) else np.int64).reshape(
        -1, 2
    )
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
