"""Out-of-core settings and DuckDB connections for the cross-record steps of the local engine.

Cross-record steps (LSH band buckets, exact-duplicate groups) work on compact signal columns. Up to
a size they run in numpy; beyond it they stream their rows through DuckDB in chunks, which groups,
joins and sorts them within ``memory_limit_mib`` and spills the rest to ``temp_directory``, so the
Python side never holds more than about ``chunk_rows`` rows of intermediate data at once. Both
paths give identical results (the tests force the DuckDB path with tiny thresholds).

Settings travel in a context variable rather than through every signature, so the engine protocol
(``bucket_pairs(band_keys, max_bucket)``) stays the same for every engine; the audit sets the
temporary directory inside its workspace.

Signal columns and large findings tables live in uncompressed Arrow files read memory-mapped
(:func:`map_arrow_file`): a pass over them brings in the pages it reads, and :func:`release` /
:func:`release_mapped` hand those pages back, so what the process holds does not grow with the
data.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from curata.errors import ConfigError

__all__ = [
    "ChunkStats",
    "OutOfCoreSettings",
    "combined_strings",
    "configured",
    "counting_order",
    "current",
    "distinct_count",
    "duckdb_connection",
    "filled_row_array",
    "is_mapped",
    "key_counts",
    "map_arrow_file",
    "release",
    "release_mapped",
    "release_rows",
    "row_array",
    "row_chunks",
    "selected_rows",
    "spill_array",
    "spill_table",
    "use_returning_memory_pool",
    "write_arrow_file",
]


@dataclass(frozen=True)
class OutOfCoreSettings:
    """When the cross-record steps leave numpy for DuckDB, and the limits DuckDB works within.

    * ``max_in_memory_keys``: band keys (rows x bands) above which LSH buckets are formed in DuckDB.
      The numpy path holds a few int64 arrays per band column plus every pair of every band before
      deduplication (about 24 bytes per emitted pair); 2**25 keys is about 1.6M rows at 21 bands.
    * ``max_in_memory_rows``: rows above which exact-duplicate groups are formed in DuckDB.
    * ``memory_limit_mib``: DuckDB's ``memory_limit``; what does not fit is spilled to disk.
    * ``temp_directory``: where DuckDB's database file and spill files go (a fresh folder per call,
      removed afterwards); None uses the system temporary folder. The audit uses its workspace.
    * ``chunk_rows``: rows moved between DuckDB and numpy at once, in either direction.
    * ``threads``: DuckDB threads (None: DuckDB's default, one per core).
    """

    max_in_memory_keys: int = 1 << 25
    max_in_memory_rows: int = 4_000_000
    memory_limit_mib: int = 512
    temp_directory: Path | None = None
    chunk_rows: int = 1 << 20
    threads: int | None = None

    def __post_init__(self) -> None:
        """Reject sizes the out-of-core path cannot use."""
        for name in ("max_in_memory_keys", "max_in_memory_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"OutOfCoreSettings.{name} must be an integer >= 0, got {value!r}")
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise ConfigError(
                f"OutOfCoreSettings.chunk_rows must be an integer >= 1, got {self.chunk_rows!r}"
            )
        if not isinstance(self.memory_limit_mib, int) or self.memory_limit_mib < 64:
            raise ConfigError(
                f"OutOfCoreSettings.memory_limit_mib must be an integer >= 64, got {self.memory_limit_mib!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"OutOfCoreSettings.threads must be None or >= 1, got {self.threads!r}")


@dataclass
class ChunkStats:
    """What an out-of-core step moved through Python: chunks, and the most rows held in one.

    ``max_rows`` counts the rows of any one intermediate batch (keys sent to DuckDB, sorted rows
    read back, pairs emitted or fetched); the final result itself is not counted.
    """

    chunks: int = 0
    max_rows: int = 0
    duckdb_calls: int = 0
    steps: list[str] = field(default_factory=list)

    def saw(self, rows: int) -> None:
        """Record one intermediate batch of ``rows`` rows."""
        self.chunks += 1
        self.max_rows = max(self.max_rows, int(rows))


_DEFAULTS = OutOfCoreSettings()
_SETTINGS: ContextVar[OutOfCoreSettings | None] = ContextVar("curata_out_of_core", default=None)
_STATS: ContextVar[ChunkStats | None] = ContextVar("curata_out_of_core_stats", default=None)


def current() -> OutOfCoreSettings:
    """The settings in force (the defaults unless inside ``configured``)."""
    return _SETTINGS.get() or _DEFAULTS


def stats() -> ChunkStats | None:
    """The statistics collector of the innermost ``configured`` block, if any."""
    return _STATS.get()


@contextlib.contextmanager
def configured(settings: OutOfCoreSettings | None = None, **changes: Any) -> Iterator[ChunkStats]:
    """Use ``settings`` (or the current ones with ``changes``) inside the block; yields its statistics."""
    base = settings if settings is not None else current()
    if changes:
        base = OutOfCoreSettings(**{**base.__dict__, **changes})
    collector = ChunkStats()
    token = _SETTINGS.set(base)
    token_stats = _STATS.set(collector)
    try:
        yield collector
    finally:
        _SETTINGS.reset(token)
        _STATS.reset(token_stats)


@contextlib.contextmanager
def duckdb_connection(settings: OutOfCoreSettings, step: str) -> Iterator[tuple[Any, Path]]:
    """A DuckDB connection on a fresh database file, with the memory limit and spill folder set.

    Yields (connection, folder): a file-backed database (not ``:memory:``) so that tables larger
    than the memory limit live on disk, in ``folder``, where the caller may put its own spill files
    too; the folder is removed when the block ends.
    """
    import duckdb

    parent = settings.temp_directory
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"curata-{step}-", dir=parent))
    collector = stats()
    if collector is not None:
        collector.duckdb_calls += 1
        collector.steps.append(step)
    con = duckdb.connect(str(folder / "work.duckdb"))
    try:
        spill = folder / "spill"
        con.execute(f"SET memory_limit = '{settings.memory_limit_mib}MB'")
        con.execute(f"SET temp_directory = '{spill.as_posix()}'")
        con.execute("SET preserve_insertion_order = false")
        if settings.threads is not None:
            con.execute(f"SET threads = {int(settings.threads)}")
        yield con, folder
    finally:
        con.close()
        shutil.rmtree(folder, ignore_errors=True)


def distinct_count(values: pa.ChunkedArray | pa.Array, settings: OutOfCoreSettings | None = None) -> int:
    """How many distinct values (null counts as one) ``values`` holds.

    Up to ``chunk_rows`` values, by Arrow in memory (``unique``, several times faster than
    ``count_distinct`` on strings); past it, by DuckDB within its memory limit (spilling to disk):
    a hash table of millions of strings in Arrow costs ~150 bytes a value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    settings = settings or current()
    if len(values) <= settings.chunk_rows:
        return len(pc.unique(values))
    table = pa.table({"v": values})
    with duckdb_connection(settings, "distinct") as (con, _):
        con.register("t", table)
        row = con.execute("SELECT count(DISTINCT v) + (count(*) > count(v))::INTEGER FROM t").fetchone()
    return int(row[0]) if row else 0


def record(rows: int) -> None:
    """Count one intermediate batch in the active statistics collector (if any)."""
    collector = stats()
    if collector is not None:
        collector.saw(rows)


class TempFolder:
    """A folder of files that outlive the call that wrote them (e.g. for a cluster's tasks to read),
    removed with its contents once the last object holding this one goes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        weakref.finalize(self, shutil.rmtree, str(self.path), True)


def spill_array(shape: tuple[int, ...], dtype: Any, settings: OutOfCoreSettings | None = None) -> np.ndarray:
    """A zeroed array backed by an unlinked file in the temporary folder (a ``numpy.memmap``).

    For a large input that must be an array (e.g. the band keys an engine's ``bucket_pairs`` takes)
    but is read by chunks: pages written or read can be handed back with :func:`release_rows`, so
    the process holds only the chunk it works on; the file is deleted at once and its space freed
    when the array goes.
    """
    settings = settings or current()
    parent = settings.temp_directory
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="curata-array-", suffix=".bin", dir=parent)
    try:
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        os.ftruncate(fd, nbytes)
        arr = np.memmap(name, dtype=dtype, mode="r+", shape=shape)
    finally:
        os.close(fd)
        os.unlink(name)
    return arr


def row_array(n: int, dtype: Any, settings: OutOfCoreSettings | None = None, width: int = 0) -> np.ndarray:
    """A zeroed array of ``n`` rows for a per-row index of a cross-record step (a group, a rank, a
    flag per record, a pair of rows per candidate pair); ``width`` > 0 gives ``(n, width)``.

    Up to ``max_in_memory_rows`` rows an ordinary array; past it a :func:`spill_array`, which the
    steps fill and read in chunks of ``chunk_rows`` (:func:`row_chunks`), handing each chunk's pages
    back (:func:`release_rows`): what they hold then depends on the chunk size, not on ``n``.
    """
    settings = settings or current()
    shape = (n, width) if width > 0 else (n,)
    if n <= settings.max_in_memory_rows:
        return np.zeros(shape, dtype=dtype)
    return spill_array(shape, dtype, settings)


def filled_row_array(n: int, dtype: Any, value: Any, settings: OutOfCoreSettings | None = None) -> np.ndarray:
    """A :func:`row_array` of ``n`` rows holding ``value`` everywhere, filled chunk by chunk."""
    settings = settings or current()
    arr = row_array(n, dtype, settings)
    for lo, hi in row_chunks(n, settings):
        arr[lo:hi] = value
        release_rows(arr, lo, hi)
    return arr


def selected_rows(
    n: int, pick: Callable[[int, int], np.ndarray], settings: OutOfCoreSettings | None = None
) -> np.ndarray:
    """The rows of ``0..n`` that ``pick(lo, hi)`` selects (offsets within each chunk of
    :func:`row_chunks`, ascending), as one int64 :func:`row_array`: a pass to count, a pass to
    fill, so only a chunk's selection is held, however many rows are selected."""
    settings = settings or current()
    chunks = list(row_chunks(n, settings))
    counts = [len(pick(lo, hi)) for lo, hi in chunks]
    out = row_array(sum(counts), np.int64, settings)
    at = 0
    for (lo, hi), count in zip(chunks, counts, strict=True):
        out[at : at + count] = lo + pick(lo, hi)
        release_rows(out, at, at + count)
        at += count
    return out


def key_counts(keys: np.ndarray, n_keys: int, settings: OutOfCoreSettings | None = None) -> np.ndarray:
    """How many of ``keys`` (integers in ``[0, n_keys)``) hold each key, as an int64
    :func:`row_array`, counted by chunks."""
    settings = settings or current()
    counts = row_array(n_keys, np.int64, settings)
    for lo, hi in row_chunks(len(keys), settings):
        np.add.at(counts, np.asarray(keys[lo:hi], np.int64), 1)
    return counts


def counting_order(
    keys: np.ndarray, n_keys: int, settings: OutOfCoreSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The positions of ``keys`` (integers in ``[0, n_keys)``) ordered by key, ties in position
    order, and where each key's run ends in that order (``ends[k - 1]:ends[k]`` is key k's run,
    ``0:ends[0]`` key 0's).

    A counting sort by chunks of ``chunk_rows`` into :func:`row_array`s (file-backed past
    ``max_in_memory_rows``): no sort of the whole array, nothing held that grows with it.
    """
    settings = settings or current()
    m = len(keys)
    ends = key_counts(keys, n_keys, settings)
    total = 0
    for lo, hi in row_chunks(n_keys, settings):
        part = np.cumsum(ends[lo:hi]) + total
        total = int(part[-1])
        ends[lo:hi] = part - ends[lo:hi]  # each key's start, for now
        release_rows(ends, lo, hi)
    order = row_array(m, np.int64, settings)
    for lo, hi in row_chunks(m, settings):
        key = np.asarray(keys[lo:hi], np.int64)
        by_key = np.argsort(key, kind="stable")
        ordered = key[by_key]
        first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        runs = np.diff(np.r_[first, len(ordered)])
        within = np.arange(len(ordered)) - np.repeat(first, runs)
        order[ends[ordered] + within] = lo + by_key
        ends[ordered[first]] += runs  # each key once: no repeated index
    return order, ends


def combined_strings(
    chunks: Callable[[], Iterator[pa.Array]], settings: OutOfCoreSettings | None = None
) -> pa.Array:
    """The string arrays ``chunks()`` yields (no nulls), as one array, as ``combine_chunks`` would
    make it; past ``max_in_memory_rows`` rows its offsets and characters are file-backed
    (:func:`spill_array`), copied chunk by chunk, so no copy of the whole column is held.

    ``chunks`` is called twice (sizes, then copy): it must yield the same arrays each time.
    """
    import pyarrow as pa

    settings = settings or current()
    sizes = [(len(c), _string_bytes(c)) for c in chunks()]
    n, total = sum(k for k, _ in sizes), sum(b for _, b in sizes)
    if n <= settings.max_in_memory_rows:
        return pa.chunked_array(list(chunks()), pa.string()).combine_chunks()
    large = total >= 2**31
    offsets = spill_array((n + 1,), np.int64 if large else np.int32, settings)
    data = spill_array((max(total, 1),), np.uint8, settings)
    row = pos = 0
    for chunk in chunks():
        if chunk.null_count:
            raise ValueError("combined_strings takes arrays without nulls")
        width = 8 if pa.types.is_large_string(chunk.type) else 4
        off = np.frombuffer(
            chunk.buffers()[1], np.int64 if width == 8 else np.int32, len(chunk) + 1, chunk.offset * width
        )
        first, last = int(off[0]), int(off[-1])
        offsets[row : row + len(chunk) + 1] = off - first + pos
        if last > first:
            data[pos : pos + last - first] = np.frombuffer(chunk.buffers()[2], np.uint8, last - first, first)
        release_rows(offsets, row, row + len(chunk) + 1)
        release_rows(data, pos, pos + last - first)
        row, pos = row + len(chunk), pos + last - first
    string_type = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(string_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _string_bytes(chunk: pa.Array) -> int:
    """Characters (bytes) a string array's values hold."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.binary_length(chunk)).as_py() or 0)


def row_chunks(n: int, settings: OutOfCoreSettings | None = None) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` bounds of consecutive chunks of at most ``chunk_rows`` rows covering ``0..n``."""
    step = (settings or current()).chunk_rows
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


def release_rows(arr: np.ndarray, lo: int, hi: int) -> None:
    """Hand rows ``lo:hi`` of a :func:`spill_array` (or of a contiguous view of one) back to the
    system, written out first; a no-op for an ordinary array.  The rows stay readable: they are
    read back from the file on next use."""
    base: Any = arr
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    if not isinstance(base, np.memmap):
        return
    raw = getattr(base, "_mmap", None)
    if raw is None or hi <= lo or arr.ndim == 0 or not arr.flags.c_contiguous:
        return
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.itemsize
    origin = int(arr.ctypes.data) - int(base.ctypes.data)  # where ``arr`` starts in the mapping
    start = ((origin + lo * row_bytes) // mmap.PAGESIZE) * mmap.PAGESIZE
    end = min(len(raw), origin + hi * row_bytes)
    if end > start:
        raw.flush(start, end - start)
        raw.madvise(mmap.MADV_DONTNEED, start, end - start)


def use_returning_memory_pool() -> str:
    """Make Arrow allocate from jemalloc (the system allocator where the build lacks it), unless
    ``ARROW_DEFAULT_MEMORY_POOL`` names a pool; returns the pool's name.

    pyarrow's default, mimalloc, keeps the pages of freed buffers: the transient buffers of reading
    a 10M-record Parquet file left 1.3 GB resident after reading against 0.45 GB with jemalloc
    (the table itself is 0.11 GB), and a whole 3M-record dedup audit peaked at 1,735 MiB PSS
    against 1,532 MiB. Set by the command line; library users choose their own pool.
    """
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return str(pa.default_memory_pool().backend_name)
    try:
        pool = pa.jemalloc_memory_pool()
        # Freed pages go back at once instead of after jemalloc's decay time: reading the ids of
        # 3M records left 553 MiB resident with the default decay and 300 MiB with none.
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    return str(pool.backend_name)


class _Weak:
    """A weak reference to a mapping that answers ``madvise`` while the mapping lives."""

    def __init__(self, mapping: mmap.mmap) -> None:
        self._ref = weakref.ref(mapping)

    def madvise(self, option: int, start: int, length: int) -> None:
        mapping = self._ref()
        if mapping is not None and not mapping.closed:
            with contextlib.suppress(ValueError, OSError):
                mapping.madvise(option, start, length)


# Memory-mapped Arrow files: start address -> (length, the mapping). Entries leave when the mapping
# is closed (every table built on it is gone), so an address is never advised after it is unmapped.
_MAPPINGS: dict[int, tuple[int, _Weak]] = {}


def write_arrow_file(path: Path, tables: Iterable[pa.Table], schema: pa.Schema) -> int:
    """Write ``tables`` to an uncompressed Arrow IPC file at ``path`` (via a temporary name, so a
    crash leaves no half-written file under it); returns the rows written."""
    import pyarrow as pa

    path = Path(path)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}{path.suffix}")
    rows = 0
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for table in tables:
                writer.write_table(table.select(schema.names).cast(schema))
                rows += table.num_rows
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def map_arrow_file(path: Path, *, unlink: bool = False) -> pa.Table:
    """The table of an uncompressed Arrow IPC file, memory-mapped: no copy is read into memory.

    Its columns are views of the file's pages, which the system reads on first use and may drop
    again under pressure; :func:`release` hands back the pages of a column once it has been read,
    so a pass over a large mapped table holds about one chunk resident at a time. ``unlink``
    removes the file at once (the mapping keeps its data until the table goes).
    """
    import pyarrow as pa

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        mapping = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
    if unlink:
        os.unlink(path)
    whole = pa.py_buffer(mapping)  # the table's buffers keep ``mapping`` open through this export
    start = int(whole.address)
    # The registry holds the mapping weakly, and loses the entry when the mapping is closed.
    _MAPPINGS[start] = (size, _Weak(mapping))
    weakref.finalize(mapping, _MAPPINGS.pop, start, None)
    return pa.ipc.open_file(pa.BufferReader(whole)).read_all()


def spill_table(tables: Iterable[pa.Table], schema: pa.Schema, folder: Path | None = None) -> pa.Table:
    """Write ``tables`` to a temporary Arrow file in ``folder`` (the out-of-core temporary folder
    when None) and return it memory-mapped; the file is removed at once."""
    parent = Path(folder) if folder is not None else current().temp_directory
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="curata-spill-", dir=parent))
    try:
        write_arrow_file(path / "table.arrow", tables, schema)
        return map_arrow_file(path / "table.arrow", unlink=True)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def release(data: pa.Table | pa.ChunkedArray | pa.Array) -> None:
    """Hand back the resident pages of ``data``'s memory-mapped buffers (see :func:`map_arrow_file`).

    The data stays readable (the pages are read again from the file on next use); buffers that are
    not in a mapped file are left alone. A no-op where ``madvise`` is unavailable.
    """
    if not _MAPPINGS or not hasattr(mmap, "MADV_DONTNEED"):
        return
    for buf in _buffers(data):
        address, size = int(buf.address), int(buf.size)
        for start, (length, mapping) in list(_MAPPINGS.items()):
            if start <= address < start + length:
                lo = ((address - start) // mmap.PAGESIZE) * mmap.PAGESIZE
                hi = min(length, address - start + size)
                if hi > lo:
                    mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
                break


def is_mapped(data: pa.Table | pa.ChunkedArray | pa.Array) -> bool:
    """Whether every buffer of ``data`` lies in a memory-mapped Arrow file (none in memory)."""
    return all(
        any(start <= int(buf.address) < start + length for start, (length, _) in _MAPPINGS.items())
        for buf in _buffers(data)
    )


def release_mapped() -> None:
    """Hand back the resident pages of every memory-mapped Arrow file (e.g. after each check)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for length, mapping in list(_MAPPINGS.values()):
        mapping.madvise(mmap.MADV_DONTNEED, 0, length)


def _buffers(data: pa.Table | pa.ChunkedArray | pa.Array) -> Iterator[pa.Buffer]:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        columns: list[Any] = list(data.columns)
    else:
        columns = [data]
    for column in columns:
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        for chunk in chunks:
            for buf in chunk.buffers():
                if buf is not None and buf.size:
                    yield buf
