"""The engine interface: map a picklable function over batches, in order, with progress.

Engines also run the cross-record steps that a cluster can share out (``bucket_pairs``: the LSH
band buckets; ``connected_components``: duplicate clusters; ``group_representatives``: exact
duplicate groups and exact matches against a reference), so checks call the engine and never know
which one ran: every engine returns the same arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import pyarrow as pa

from curata.errors import ConfigError
from curata.knn import Metric, Neighbours

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ColumnRows:
    """Some rows of a per-record column (LSH band keys, embeddings, exact-duplicate keys), by reference.

    ``column`` is the whole column as this process holds it (an Arrow column, often memory-mapped,
    or a 2-D array), ``rows`` the rows wanted, ascending (None: every row). ``files``: when the
    column is also kept in Arrow files that a cluster's workers may read (``(path, rows)`` in row
    order, as :attr:`curata.signals.pipeline.Signals.files`), under the name ``name``. An engine
    whose tasks reach those files reads the rows there, so they do not pass through this process;
    any other engine takes :meth:`to_array`.
    """

    column: pa.ChunkedArray | np.ndarray
    rows: np.ndarray | None = None
    name: str = ""
    files: tuple[tuple[str, int], ...] = ()

    def __len__(self) -> int:
        return len(self.column) if self.rows is None else len(self.rows)

    @property
    def width(self) -> int:
        """Values per row (of a column of fixed-size lists or a 2-D array)."""
        column = self.column
        return int(column.type.list_size) if isinstance(column, pa.ChunkedArray) else int(column.shape[1])

    def to_array(self) -> np.ndarray:
        """The rows as a ``(len(self), width)`` array (see :func:`list_rows`)."""
        return list_rows(self.column, self.rows)

    def stored_for(self, reaches: Callable[[Path], bool]) -> bool:
        """Whether the column is kept whole in files whose folders ``reaches`` says every worker
        reads (see :meth:`ContentEngine.reaches`), so tasks may read the rows there."""
        if not self.files or not self.name or sum(rows for _, rows in self.files) != len(self.column):
            return False
        return all(reaches(folder) for folder in {Path(path).parent for path, _ in self.files})


def list_rows(column: pa.ChunkedArray | np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Rows ``rows`` (ascending; None: all) of a column of fixed-size lists as a ``(rows, width)``
    array, gathered chunk by chunk (no combined copy of the whole column first); file-backed past
    ``max_in_memory_keys`` values (see :func:`curata.outofcore.spill_array`). A 2-D array is
    indexed."""
    from curata import outofcore

    if isinstance(column, np.ndarray):
        return column if rows is None else column[rows]
    n = len(column) if rows is None else len(rows)
    width = int(column.type.list_size)
    dtype = column.type.value_type.to_pandas_dtype() if len(column) else np.float32
    if n * width > outofcore.current().max_in_memory_keys:
        out = outofcore.spill_array((n, width), dtype)
    else:
        out = np.empty((n, width), dtype=dtype)
    offset = 0
    for chunk in column.chunks:
        if rows is None:
            lo, hi = offset, offset + len(chunk)
        else:
            lo, hi = (int(v) for v in np.searchsorted(rows, [offset, offset + len(chunk)]))
        if hi > lo:
            values = chunk.values.slice(chunk.offset * width, len(chunk) * width)
            view = np.asarray(values.to_numpy(zero_copy_only=False)).reshape(-1, width)
            out[lo:hi] = view if rows is None else view[np.asarray(rows[lo:hi]) - offset]
            outofcore.release_rows(out, int(lo), int(hi))
            outofcore.release(chunk)
        offset += len(chunk)
    return out


def file_pieces(files: Sequence[tuple[str, int]], rows: np.ndarray) -> list[tuple[str, int]]:
    """For ``rows`` (ascending) of the concatenation of ``files`` ((path, rows) in order): (path,
    first row of the file) of every file holding some of them, as :func:`read_file_rows` takes."""
    out = []
    first = 0
    for path, count in files:
        lo, hi = np.searchsorted(rows, [first, first + count])
        if hi > lo:
            out.append((path, first))
        first += count
    return out


def key_column(keys: pa.ChunkedArray | ColumnRows) -> pa.ChunkedArray:
    """The Arrow column of ``group_representatives``' keys (a ConfigError for anything else)."""
    column = keys.column if isinstance(keys, ColumnRows) else keys
    if not isinstance(column, pa.ChunkedArray):
        raise ConfigError("group_representatives needs an Arrow column of keys")
    return column


def read_file_rows(
    pieces: Sequence[tuple[str, int]], name: str, rows: np.ndarray, dtype: Any = None
) -> np.ndarray:
    """Task side of :class:`ColumnRows`: column ``name``'s values at ``rows`` of the Arrow files
    ``pieces`` (``(path, first row)``: files of a column in order, as :func:`file_pieces` lists
    those holding some of ``rows``, and where each starts in it; ``rows`` ascending, counted in the
    whole column, all within these files), as a
    ``(len(rows), width)`` array. The files are memory-mapped."""
    from curata import outofcore

    parts = []
    for k, (path, first) in enumerate(pieces):
        table = outofcore.map_arrow_file(Path(path))
        end = first + table.num_rows
        lo, hi = np.searchsorted(rows, [first, end])
        if k + 1 < len(pieces) and pieces[k + 1][1] < end:
            raise ValueError(f"{path}: the pieces overlap or are out of order")
        if hi > lo:
            parts.append(list_rows(table.column(name), np.asarray(rows[lo:hi]) - first))
    if not parts:
        return np.zeros((0, 0), dtype=dtype or np.float32)
    out = np.concatenate(parts)
    if len(out) != len(rows):
        raise ValueError(f"{len(rows) - len(out)} of the rows asked for are in none of the pieces")
    return out if dtype is None else out.astype(dtype, copy=False)


class Engine(Protocol):
    """Runs ``fn(batch, *args)`` for each batch and yields results in input order.

    ``args`` are the same for every batch. An argument that holds heavy lazily loaded state (an
    encoder, whose model loads on first use) may be kept by an engine once per worker instead of
    being shipped with every batch; the results must not depend on that.
    """

    name: str
    workers: int
    #: Whether batches run on other machines (Ray). An in-process step whose work releases the GIL
    #: (numpy, faiss) may then use this process's threads instead of shipping batches.
    distributed: bool

    def map_batches(
        self,
        fn: Callable[..., R],
        batches: Iterable[Any],
        *,
        args: tuple[Any, ...] = (),
        description: str = "",
        total: int | None = None,
    ) -> Iterator[R]:
        """Yield ``fn(batch, *args)`` for each batch, in order."""
        ...

    def bucket_pairs(self, band_keys: np.ndarray | ColumnRows, max_bucket: int | None = None) -> np.ndarray:
        """The (m, 2) int64 row pairs ``i < j`` sharing a key in some band column, unique and sorted.

        Rows count among ``band_keys``' rows (of a :class:`ColumnRows`: among the rows it selects).

        Same result as :func:`curata.lsh.candidate_pairs`: buckets of more than ``max_bucket`` rows
        emit a star from their lowest row plus a chain over consecutive rows instead of every pair
        (None: ``curata.lsh.DEFAULT_MAX_BUCKET``).
        """
        ...

    def connected_components(self, n: int, pairs: np.ndarray) -> np.ndarray:
        """A label per row of ``n``: the lowest row of its connected component over ``pairs``.

        ``pairs`` is an (m, 2) array of rows in ``[0, n)``; the labels equal
        :func:`curata.lsh.connected_labels`.
        """
        ...

    def group_representatives(
        self, keys: pa.ChunkedArray | ColumnRows, valid: np.ndarray, rank: np.ndarray
    ) -> np.ndarray:
        """int64 per row: the row of lowest ``rank`` among the valid rows whose key equals its key.

        ``keys``: an Arrow column, or a :class:`ColumnRows` of one (every row; its files let a
        distributed engine's tasks read the keys there).

        -1 for rows not ``valid`` and rows with a null key; a row whose key no other valid row holds
        is its own representative. ``rank`` is a permutation of ``0..n-1``. Equals
        :func:`curata.engine.grouping.group_representatives`.
        """
        ...

    def nearest_neighbours(
        self, vectors: np.ndarray | ColumnRows, k: int, metric: Metric = "cosine"
    ) -> Neighbours:
        """The ``k`` nearest other rows of every row of ``vectors``, as
        :func:`curata.knn.nearest_neighbours` (neighbours ordered by distance, then row)."""
        ...


@dataclass(frozen=True)
class ContentSource:
    """Where workers that read the content themselves find it (see :class:`ContentEngine`).

    Either Parquet ``files`` (local paths, or paths in the pyarrow ``filesystem``) whose
    ``column`` holds the content, or the content column's in-memory ``chunks``. ``local_copy``:
    the files are copies this machine made (staged CSV or JSON lines), which other machines of a
    cluster cannot read.
    """

    modality: str
    column: str
    num_rows: int
    files: tuple[str, ...] = ()
    filesystem: Any = None
    chunks: tuple[pa.Array, ...] = ()
    local_copy: bool = False


@dataclass(frozen=True)
class Finish:
    """A second step of :meth:`ContentEngine.map_content`: ``fn(table, *args)`` over the first
    step's output tables, in batches of at least ``rows`` rows (the last may be shorter), run where
    those tables are (on a cluster: the workers), whose outputs are what comes back in row order."""

    fn: Any
    args: tuple[Any, ...]
    rows: int


@runtime_checkable
class ContentEngine(Protocol):
    """An engine whose workers read the records' content themselves (Ray Data).

    ``map_content`` runs ``fn(table, *args)`` over the content, read from ``source`` as tables of
    one column, ``content``, of at most ``batch_size`` rows, and yields fn's tables in row order.
    """

    def map_content(
        self,
        source: ContentSource,
        fn: Any,
        *,
        args: tuple[Any, ...],
        batch_size: int,
        description: str,
        finish: Finish | None = None,
    ) -> Iterator[pa.Table]:
        """Yield ``fn(table, *args)`` for the content's batches, in row order (blocks may merge);
        with ``finish``, its function's outputs over those tables instead."""
        ...

    def reaches(self, folder: Path) -> bool:
        """Whether every worker reads and writes the files under ``folder`` as this process sees
        them (the same machine, or storage every machine mounts at that path)."""
        ...

    def map_partitions(
        self,
        source: ContentSource,
        rows: np.ndarray,
        part: np.ndarray,
        jobs: Sequence[Any],
        fn: Any,
        *,
        args: tuple[Any, ...],
        description: str,
    ) -> Iterator[Any]:
        """Yield ``fn(values, jobs[p], *args)`` for every partition ``p``, in partition order.

        ``values`` is the content of the rows ``rows[part == p]`` in row order (``rows`` ascending,
        ``part`` one partition per row, -1 for rows left out): workers read the content and shuffle
        each partition's records to the worker that runs ``fn`` on them, so neither the content
        nor the partitions pass through this process; only fn's results do.
        """
        ...
