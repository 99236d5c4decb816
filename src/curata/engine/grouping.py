"""Exact-duplicate grouping: the row of lowest rank among the valid rows sharing a key.

The local engine's ``group_representatives`` lives here: an Arrow dictionary encoding in memory,
or a DuckDB group-by (spilling to disk) above ``OutOfCoreSettings.max_in_memory_rows`` rows; both
give the same groups. :func:`key_batches` streams the (key, row, rank) entries that the DuckDB
group-by and the Ray engine's hash shuffle both consume.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata import outofcore
from curata.errors import ConfigError

__all__ = ["count_true", "group_representatives", "key_batches", "own_groups", "split_keys", "valid_entries"]


def valid_entries(
    keys: pa.ChunkedArray, valid: np.ndarray, rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check the arguments of ``group_representatives``; return (valid rows with a key, rank as int64).

    A row takes part when ``valid`` says so and its key is not null: every engine leaves the same
    rows out. The flags are made chunk by chunk into an ``outofcore.row_array`` (a file-backed
    array past ``max_in_memory_rows`` rows).
    """
    n = len(keys)
    valid = np.asarray(valid, dtype=bool)
    rank = np.asarray(rank, dtype=np.int64)
    if valid.shape != (n,) or rank.shape != (n,):
        raise ConfigError(
            f"group_representatives needs one valid flag and one rank per key ({n}), "
            f"got {valid.shape} and {rank.shape}"
        )
    usable = outofcore.row_array(n, bool)
    offset = 0
    for piece in keys.chunks:
        for lo, hi in outofcore.row_chunks(len(piece)):
            has_key = np.asarray(
                piece.slice(lo, hi - lo).is_valid().to_numpy(zero_copy_only=False), dtype=bool
            )
            start, end = offset + lo, offset + hi
            usable[start:end] = valid[start:end] & has_key
            outofcore.release_rows(usable, start, end)
        offset += len(piece)
    return usable, rank


def own_groups(valid: np.ndarray) -> np.ndarray:
    """``row`` for every valid row, -1 for the others: each valid row its own group, before the
    rows sharing a key are joined (an ``outofcore.row_array``, filled chunk by chunk)."""
    n = len(valid)
    group = outofcore.row_array(n, np.int64)
    for lo, hi in outofcore.row_chunks(n):
        group[lo:hi] = np.where(valid[lo:hi], np.arange(lo, hi, dtype=np.int64), -1)
        outofcore.release_rows(group, lo, hi)
    return group


def count_true(flags: np.ndarray) -> int:
    """How many of ``flags`` are set, read chunk by chunk."""
    total = 0
    for lo, hi in outofcore.row_chunks(len(flags)):
        total += int(np.count_nonzero(flags[lo:hi]))
        outofcore.release_rows(flags, lo, hi)
    return total


def split_keys(key_type: pa.DataType) -> bool:
    """Whether keys of ``key_type`` travel as two uint64 words (16-byte hashes: integers group and
    sort much faster than blobs, in DuckDB and in Arrow alike)."""
    return bool(pa.types.is_fixed_size_binary(key_type) and key_type.byte_width == 16)


def key_batches(
    keys: pa.ChunkedArray, valid: np.ndarray, rank: np.ndarray, chunk_rows: int
) -> pa.RecordBatchReader:
    """Stream (key..., row, rank) of the valid rows, at most ``chunk_rows`` rows at a time.

    16-byte hashes travel as two UBIGINT columns ``k0, k1`` (see :func:`split_keys`); other key
    types as they are, in column ``k0``.
    """
    split = split_keys(keys.type)
    if split:
        schema = pa.schema(
            [("k0", pa.uint64()), ("k1", pa.uint64()), ("row", pa.int64()), ("rank", pa.int64())]
        )
    else:
        schema = pa.schema([("k0", keys.type), ("row", pa.int64()), ("rank", pa.int64())])

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for piece in keys.chunks:
            for lo in range(0, len(piece), chunk_rows):
                part = piece.slice(lo, chunk_rows)
                start = offset + lo
                rows = np.flatnonzero(valid[start : start + len(part)])
                outofcore.record(len(part))
                if rows.size == 0:
                    continue
                sel = pa.array(rows)
                if split:
                    buf = part.buffers()[1]
                    assert buf is not None
                    words = np.frombuffer(buf, np.uint64, count=2 * len(part), offset=part.offset * 16)
                    words = words.reshape(-1, 2)[rows]
                    cols = [pa.array(words[:, 0]), pa.array(words[:, 1])]
                else:
                    cols = [part.take(sel)]
                yield pa.record_batch(
                    [*cols, pa.array(rows + start), pa.array(rank[rows + start])], schema=schema
                )
            offset += len(piece)
            outofcore.release(piece)

    return pa.RecordBatchReader.from_batches(schema, batches())


def group_representatives(keys: pa.ChunkedArray, valid: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """``group[row]``: the row of lowest ``rank`` among the valid rows whose key equals ``row``'s.

    -1 for rows not ``valid`` and rows with a null key. ``rank`` is a permutation of ``0..n-1``
    (see ``curata.checks.groups.representative_rank``). In memory up to
    ``OutOfCoreSettings.max_in_memory_rows`` rows, in DuckDB above.
    """
    valid, rank = valid_entries(keys, valid, rank)
    n = len(valid)
    settings = outofcore.current()
    if n > settings.max_in_memory_rows and n >= 2:
        return _duckdb_groups(keys, valid, rank, settings)
    return _in_memory_groups(keys, valid, rank)


def _in_memory_groups(keys: pa.ChunkedArray, valid: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The groups from an Arrow dictionary encoding of the keys (a code per row)."""
    n = len(valid)
    codes = pc.dictionary_encode(keys).combine_chunks()
    idx = np.asarray(codes.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    idx = np.where(valid, idx, len(codes.dictionary))
    best = np.full(len(codes.dictionary) + 1, n, dtype=np.int64)
    np.minimum.at(best, idx[valid], rank[valid])
    order = np.argsort(rank, kind="stable")
    group: np.ndarray = np.where(valid, order[np.minimum(best[idx], n - 1)], -1)
    return group


def _duckdb_groups(keys: pa.ChunkedArray, valid: np.ndarray, rank: np.ndarray, settings: Any) -> np.ndarray:
    """The groups from a DuckDB group-by (spilling past its memory limit).

    The group-by keeps only keys held by two or more rows, with the row of lowest rank; a second pass
    joins the rows to those groups and streams (row, representative) back in chunks.  Every other
    valid row is its own group.  The result is an ``outofcore.row_array``: past
    ``max_in_memory_rows`` rows a file-backed array, so this process holds chunks, not ``n`` rows.
    """
    group = own_groups(valid)
    chunk = settings.chunk_rows
    split = split_keys(keys.type)
    key = "k0, k1" if split else "k0"
    on = "e.k0 = g.k0 AND e.k1 = g.k1" if split else "e.k0 = g.k0"
    with outofcore.duckdb_connection(settings, "exact") as (con, _):
        con.register("entries", key_batches(keys, valid, rank, chunk))
        con.execute(
            f"CREATE TABLE g AS SELECT {key}, arg_min(row, rank) AS rep FROM entries "
            f"GROUP BY {key} HAVING count(*) >= 2"
        )
        con.unregister("entries")
        if con.execute("SELECT count(*) FROM g").fetchall()[0][0] == 0:
            return group
        # As in curata.lsh: build the join's hash table on the groups, not on the unsized stream.
        con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
        con.register("entries", key_batches(keys, valid, rank, chunk))
        for part in con.sql(f"SELECT e.row, g.rep FROM entries e JOIN g ON {on}").to_arrow_reader(chunk):
            outofcore.record(part.num_rows)
            group[part.column(0).to_numpy()] = part.column(1).to_numpy()
        con.unregister("entries")
    return group
