"""Compute per-record signals for a dataset through an engine, reusing the workspace cache."""

from __future__ import annotations

import dataclasses
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from curata import outofcore
from curata.dataset import Dataset
from curata.engine.base import ContentEngine, ContentSource, Engine, Finish
from curata.errors import EngineError, InputError
from curata.signals.cache import SignalCache, write_part
from curata.signals.image import ImageHashSettings, image_signals
from curata.signals.text import MinHashSettings, band_keys, minhash_signatures, normalize_text

_NULL_CONTENT = b"\x00curata:null"


@dataclass(frozen=True)
class SignalSettings:
    """Settings of every per-record signal; their fingerprints key the cache."""

    minhash: MinHashSettings = field(default_factory=MinHashSettings)
    image: ImageHashSettings = field(default_factory=ImageHashSettings)
    batch_size: int = 20_000
    image_batch_size: int = 256

    def fingerprint(self, modality: str) -> str:
        """The cache key part naming the algorithm, version and settings for ``modality``."""
        if modality == "text":
            return f"text-signals-v2|{self.minhash.fingerprint()}"
        return f"image-signals-v2|{self.image.fingerprint()}"


@dataclass(frozen=True)
class Signals:
    """Per-record signals aligned with the dataset rows, with cache statistics.

    ``content_hashes`` (``S16``, one per row) are the cache keys computed on the way, kept so later
    steps (e.g. choosing an encoder's fit sample) need not read the content again.
    """

    table: pa.Table
    modality: str
    computed: int
    cached: int
    content_hashes: np.ndarray | None = None
    #: (path, rows) of the Arrow files whose rows, in this order, are ``table`` (with a
    #: ``content_hash`` column more): the cache's parts, when a run computed every row. A
    #: distributed engine's tasks read rows from them (see :class:`curata.engine.base.ColumnRows`).
    #: Empty when the table is a temporary file of this process.
    files: tuple[tuple[str, int], ...] = ()
    #: What must live as long as ``files`` may be read (the run's folder of rows put in order,
    #: removed when the last holder goes); pass it on with ``files``.
    keep: outofcore.TempFolder | None = field(default=None, compare=False, repr=False)

    def column(self, name: str) -> pa.ChunkedArray:
        """Return one signal column."""
        return self.table.column(name)


#: Bytes of a content or exact-duplicate hash (XXH3-128).
HASH_BYTES = 16
HASH_TYPE = pa.binary(HASH_BYTES)


def content_hash(data: bytes | None) -> bytes:
    """16-byte digest identifying raw content (text as UTF-8, files as bytes)."""
    return xxhash.xxh3_128_digest(_NULL_CONTENT if data is None else data)


def hash_array(digests: Sequence[bytes]) -> np.ndarray:
    """Pack 16-byte digests into one numpy ``S16`` array (sortable, 16 bytes a row)."""
    return (
        np.frombuffer(b"".join(digests), dtype=f"S{HASH_BYTES}") if digests else np.empty(0, f"S{HASH_BYTES}")
    )


def hash_column(hashes: np.ndarray) -> pa.Array:
    """Turn an ``S16`` numpy array into an Arrow ``fixed_size_binary(16)`` array without a copy per row."""
    buf = pa.py_buffer(np.ascontiguousarray(hashes).tobytes())
    return pa.Array.from_buffers(HASH_TYPE, len(hashes), [None, buf])


def hashes_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The ``S16`` numpy view of a ``fixed_size_binary(16)`` hash column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    buf = arr.buffers()[1]
    if buf is None or len(arr) == 0:
        return np.empty(0, f"S{HASH_BYTES}")
    return np.frombuffer(buf, dtype=f"S{HASH_BYTES}", count=len(arr), offset=arr.offset * HASH_BYTES)


def sorted_hashes(
    column: pa.ChunkedArray, settings: outofcore.OutOfCoreSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``S16`` hashes of ``column`` in ascending byte order, and the row each came from
    (ties in row order), as ``outofcore.row_array``s.

    A radix pass then small sorts, all by chunks: rows are first ordered by their hash's first two
    bytes (``outofcore.counting_order``, 65,536 buckets), then each run of whole buckets of about
    ``chunk_rows`` rows is sorted in memory. Content hashes are uniform, so the buckets are even;
    nothing held grows with the number of rows (past ``max_in_memory_rows`` the arrays are
    file-backed).
    """
    settings = settings or outofcore.current()
    m = len(column)
    buckets = outofcore.row_array(m, np.int32, settings)
    for lo, hi in outofcore.row_chunks(m, settings):
        head = hashes_of(column.slice(lo, hi - lo)).view(np.uint8).reshape(-1, HASH_BYTES)
        buckets[lo:hi] = head[:, 0].astype(np.int32) * 256 + head[:, 1]
        outofcore.release_rows(buckets, lo, hi)
    order, ends = outofcore.counting_order(buckets, 1 << 16, settings)
    del buckets
    ordered = outofcore.row_array(m, f"S{HASH_BYTES}", settings)
    rows = outofcore.row_array(m, np.int64, settings)
    # Cut between buckets, about every ``chunk_rows`` rows (a bucket is never split).
    cuts = np.unique(np.searchsorted(ends, np.arange(0, m, settings.chunk_rows), side="right"))
    stops = np.unique(np.r_[np.asarray(ends)[np.minimum(cuts, len(ends) - 1)], m])
    start = 0
    for stop in stops.tolist():
        if stop <= start:
            continue
        which = np.asarray(order[start:stop])
        values = hashes_of(column.take(pa.array(which)))
        by_hash = np.argsort(values, kind="stable")
        ordered[start:stop] = values[by_hash]
        rows[start:stop] = which[by_hash]
        for arr in (ordered, rows):
            outofcore.release_rows(arr, start, stop)
        start = stop
    return ordered, rows


def fold_band_keys(keys: np.ndarray) -> np.ndarray:
    """Fold 64-bit band keys to 32 bits (half the memory; a rare collision only adds a candidate pair
    that Jaccard verification then rejects)."""
    k = np.asarray(keys, dtype=np.uint64)
    folded: np.ndarray = (k ^ (k >> np.uint64(32))).astype(np.uint32)
    return folded


def text_batch_signals(texts: Sequence[str | None], settings: MinHashSettings) -> pa.RecordBatch:
    """Normalise texts and compute exact-duplicate keys, emptiness and (32-bit) MinHash band keys."""
    norm = [normalize_text(t) if t is not None else "" for t in texts]
    keys = fold_band_keys(band_keys(minhash_signatures(norm, settings), settings))
    flat = pa.array(keys.reshape(-1), type=pa.uint32())
    return pa.RecordBatch.from_arrays(
        [
            hash_column(hash_array([xxhash.xxh3_128_digest(s.encode()) for s in norm])),
            pa.array([t is None for t in texts], pa.bool_()),
            pa.array([len(s) for s in norm], pa.int32()),
            pa.FixedSizeListArray.from_arrays(flat, keys.shape[1]),
        ],
        names=["norm_hash", "is_null", "n_chars", "band_keys"],
    )


def image_batch_signals(items: Sequence[bytes | None], settings: ImageHashSettings) -> pa.RecordBatch:
    """Decode images and compute pixel hashes, perceptual codes and sizes (errors as values)."""
    batch = image_signals(items, settings)
    n_bytes = pa.array([None if b is None else len(b) for b in items], pa.int64())
    return batch.append_column("n_bytes", n_bytes)


def content_values(values: pa.Array | pa.ChunkedArray, modality: str, root: str | Path) -> list[Any]:
    """A batch of a content column as the values signal functions take: texts (str or None) or
    image bytes (None when unreadable; paths are read relative to ``root``)."""
    if modality == "text":
        return [None if v is None else str(v) for v in values.to_pylist()]
    folder = Path(root)
    return [_image_value(v, folder) for v in values.to_pylist()]


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _image_value(value: Any, root: Path) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):  # Hugging Face Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        return _image_value(value.get("path"), root)
    path = Path(str(value))
    return _read_file(path if path.is_absolute() else root / path)


def compute_signals(
    dataset: Dataset,
    engine: Engine,
    settings: SignalSettings,
    cache: SignalCache | None = None,
    label: str = "data",
) -> Signals:
    """Compute signals for every record of ``dataset``, computing only what the cache lacks."""
    modality = dataset.modality
    if modality == "none":
        return Signals(pa.table({"content_hash": pa.array([], HASH_TYPE)}), modality, 0, 0)
    if modality == "text":
        fn: Any = text_batch_signals
        args: tuple[Any, ...] = (settings.minhash,)
        batch_size = settings.batch_size
    else:
        fn = image_batch_signals
        args = (settings.image,)
        batch_size = settings.image_batch_size
    return map_records(
        dataset,
        engine,
        fn,
        args,
        fingerprint=settings.fingerprint(modality),
        cache=cache,
        batch_size=batch_size,
        description=f"signals ({label})",
    )


def content_items(dataset: Dataset, batch_size: int) -> Iterator[list[Any]]:
    """The records' content in batches: texts (str or None) or image bytes (None when unreadable)."""
    modality = dataset.modality
    if modality in ("text", "image"):
        return (
            content_values(values, modality, dataset.root)
            for values in dataset.content_batches(modality, batch_size)
        )
    raise InputError(f"{dataset.source}: has no text or image column to compute content signals from")


def map_records(
    dataset: Dataset,
    engine: Engine,
    fn: Any,
    args: tuple[Any, ...],
    *,
    fingerprint: str,
    cache: SignalCache | None,
    batch_size: int,
    description: str,
) -> Signals:
    """Run ``fn(content_batch, *args) -> RecordBatch`` over every record through ``engine``, cached.

    Rows are keyed by the hash of their content and ``fingerprint`` (which must name the function,
    its version and every setting that changes its output): only content the cache lacks is
    computed, and the result is aligned with the dataset's rows. An engine that reads content
    itself (:class:`ContentEngine`, e.g. Ray) has its workers read, hash and look records up;
    otherwise this process reads the content and ships only the misses. Results go to disk as they
    arrive (the cache's parts, or a spill file without a cache) and the returned table is read
    from there memory-mapped, so memory does not grow with the data.
    """
    modality = dataset.modality
    cached, cached_files = cache.load_parts(fingerprint) if cache is not None else (None, ())
    # Cache lookup by binary search over the sorted cached hashes: 16 bytes a row, no Python dict,
    # file-backed past ``max_in_memory_rows`` rows (see ``sorted_hashes``).
    cached_sorted = np.empty(0, f"S{HASH_BYTES}")
    cached_order = np.empty(0, np.int64)
    if cached is not None and cached.num_rows:
        cached_sorted, cached_order = sorted_hashes(cached.column("content_hash"), _spill_settings(cache))
        outofcore.release(cached)
    stream: Iterator[tuple[np.ndarray, np.ndarray, pa.Table | None, list[str]]]
    workers_store = False
    if isinstance(engine, ContentEngine) and modality in ("text", "image"):
        # When the workers share the workspace, they write what they compute to the cache
        # themselves and send back only each record's hash and cache position: the signals do not
        # pass through this process, which reads them from the cache's files.
        finish = None
        if cache is not None and engine.reaches(cache.folder(fingerprint)):
            finish = Finish(store_computed, (str(cache.folder(fingerprint)), fingerprint), STORE_ROWS)
            workers_store = True
        blocks = engine.map_content(
            content_source(dataset),
            signals_of_content,
            args=(modality, str(dataset.root), fn, args, cached_sorted),
            batch_size=batch_size,
            description=description,
            finish=finish,
        )
        stream = (_split_block(block) for block in blocks)
    else:
        stream = (
            (*item, [])
            for item in _read_here(dataset, engine, fn, args, cached_sorted, batch_size, description)
        )

    n_rows = dataset.num_rows
    # One content hash per row, in a file-backed array (16 bytes a row are not kept in memory),
    # and where each row's signals are: ``c >= 0`` at row ``c`` of the cache, ``-2 - k`` the k-th
    # row computed now, -1 not yet seen (an ``outofcore.row_array``: file-backed past
    # ``max_in_memory_rows`` rows, so no vector of the data's length stays in memory).
    spill = _spill_settings(cache)
    content_hashes = (
        outofcore.spill_array((n_rows,), f"S{HASH_BYTES}", spill) if n_rows else np.empty(0, f"S{HASH_BYTES}")
    )
    source = outofcore.row_array(n_rows, np.int64, spill)
    computed_parts: list[pa.Table] = []
    # (path, rows) of each computed part when it is a file of the cache (see ``Signals.files``).
    part_files: list[tuple[str, int]] = []
    fresh: list[pa.Table] = []
    fresh_rows = 0
    n_computed = 0
    n_cached = 0
    offset = 0
    spill_folder = cache.temp_folder() if cache is not None else None

    def keep(parts: list[pa.Table]) -> pa.Table:
        # Each compacted part goes to disk at once (to the cache, when there is one: a run that fails
        # later, a lost worker, an interrupt, leaves what it computed and the re-run computes only
        # the rest) and is read back memory-mapped, so no pass holds the signals in memory.
        part = _compact(parts)
        if cache is not None:
            path = cache.store(fingerprint, part)
            if path is not None:
                part_files.append((str(path), part.num_rows))
                return outofcore.map_arrow_file(path)
        return outofcore.spill_table([part], part.schema, spill_folder)

    try:
        for hashes, at, result, stored in stream:
            lo, hi = offset, offset + len(hashes)
            offset = hi
            if hi > n_rows:
                continue  # more records than the data held when read: reported below
            content_hashes[lo:hi] = hashes
            outofcore.release_rows(content_hashes, lo, hi)
            found = at >= 0
            where = np.full(hi - lo, -1, dtype=np.int64)
            where[found] = cached_order[at[found]]
            n_cached += int(np.count_nonzero(found))
            if workers_store or result is not None:
                computed_now = int(np.count_nonzero(~found))
                where[~found] = -2 - np.arange(n_computed, n_computed + computed_now)
                n_computed += computed_now
            # Stored by the workers: the computed records are in the parts named so far, in order
            # (a part's rows may end in a later block: only the totals must agree).
            for path in stored:
                part = outofcore.map_arrow_file(Path(path))
                computed_parts.append(part)
                part_files.append((path, part.num_rows))
            if result is not None:
                fresh.append(result.append_column("content_hash", hash_column(hashes[~found])))
                fresh_rows += result.num_rows
                if fresh_rows >= COMPACT_ROWS:
                    computed_parts.append(keep(fresh))
                    fresh, fresh_rows = [], 0
            source[lo:hi] = where
            outofcore.release_rows(source, lo, hi)
    finally:
        # Also on failure: the batches that came back before it are complete and in order.
        if fresh:
            computed_parts.append(keep(fresh))
        del fresh
    if workers_store and sum(rows for _, rows in part_files) != n_computed:
        raise EngineError(
            f"{description or 'signals'}: the workers stored {sum(r for _, r in part_files)} computed "
            f"records but {n_computed} were computed; re-run to go on (what they stored is in the cache)"
        )
    if offset != n_rows:
        raise InputError(
            f"{dataset.source}: {offset} records were read for {description or 'signals'} but the data "
            f"holds {n_rows}; did the files change during the audit?"
        )
    computed = pa.concat_tables(computed_parts) if computed_parts else None
    del computed_parts
    if computed is not None and n_computed == n_rows:
        # Nothing came from the cache: the computed rows are already in row order, no gather needed.
        files = tuple(part_files) if cache is not None else ()
        table = computed.drop_columns(["content_hash"])
        return Signals(table, modality, n_computed, 0, content_hashes, files)
    if n_computed + n_cached != n_rows or n_rows == 0:
        raise InputError(f"{dataset.source}: no records to audit")
    # Each row's place in [computed rows, whole cache], gathered chunk by chunk into a spill file.
    sources: list[pa.Table] = []
    if computed is not None and n_computed:
        sources.append(computed.drop_columns(["content_hash"]))
    if cached is not None and n_cached:
        columns = (
            sources[0].column_names if sources else [c for c in cached.column_names if c != "content_hash"]
        )
        sources.append(cached.select(columns))
    columns = sources[0].column_names
    position = _positions(source, n_computed)
    if workers_store and cache is not None:
        # The workers reach the cache: they gather the rows into row order themselves, each chunk
        # from the parts computed now and the cache's parts, into files of a run folder that is
        # removed with the returned signals. The distributed steps then read those files.
        folder = outofcore.TempFolder(cache.temp_folder() / f"rows-{uuid.uuid4().hex}")
        sources_files = [*(part_files if n_computed else []), *cached_files]
        gathered = list(
            engine.map_batches(
                gather_rows,
                position,
                args=(sources_files, columns, str(folder.path)),
                description=f"{description or 'signals'}: rows in order",
                total=-(-n_rows // outofcore.current().chunk_rows),
            )
        )
        table = pa.concat_tables(outofcore.map_arrow_file(Path(path)) for path, _ in gathered)
        return Signals(table, modality, n_computed, n_cached, content_hashes, tuple(gathered), folder)
    combined = pa.concat_tables([t.select(columns) for t in sources])
    table = outofcore.spill_table(_gathered(combined, position), combined.schema, spill_folder)
    return Signals(table, modality, n_computed, n_cached, content_hashes)


def gather_rows(
    positions: np.ndarray, sources: Sequence[tuple[str, int]], columns: list[str], folder: str
) -> tuple[str, int]:
    """Task: the rows at ``positions`` of the concatenated Arrow files ``sources`` ((path, rows)),
    columns ``columns``, written as one Arrow file in ``folder``; returns (its path, rows)."""
    table = pa.concat_tables(outofcore.map_arrow_file(Path(path)).select(columns) for path, _ in sources)
    path = Path(folder) / f"rows-{uuid.uuid4().hex}.arrow"
    rows = outofcore.write_arrow_file(path, _gathered(table, [np.asarray(positions)]), table.schema)
    return str(path), rows


def _positions(source: np.ndarray, n_computed: int) -> Iterator[np.ndarray]:
    """Each row's place in [rows computed now, then the whole cache], by chunks, from ``source``
    (``c >= 0``: cache row c; ``-2 - k``: the k-th computed row)."""
    for lo, hi in outofcore.row_chunks(len(source)):
        part = np.asarray(source[lo:hi])
        yield np.where(part >= 0, n_computed + part, -2 - part)
        outofcore.release_rows(source, lo, hi)


def _spill_settings(cache: SignalCache | None) -> outofcore.OutOfCoreSettings:
    """The out-of-core settings, with spill files in the cache's folder when there is a cache."""
    settings = outofcore.current()
    if cache is None:
        return settings
    return dataclasses.replace(settings, temp_directory=cache.temp_folder())


def _gathered(table: pa.Table, positions: Iterable[np.ndarray]) -> Iterator[pa.Table]:
    """``table``'s rows at ``positions`` (given in chunks), at most ``COMPACT_ROWS`` at a time (each
    a take per record batch of ``table``, which may be memory-mapped: its pages are handed back
    after every chunk)."""
    batches = table.to_batches()
    starts = np.cumsum([0] + [b.num_rows for b in batches[:-1]], dtype=np.int64)
    for chunk in positions:
        for lo in range(0, len(chunk), COMPACT_ROWS):
            want = chunk[lo : lo + COMPACT_ROWS]
            order = np.argsort(want, kind="stable")
            sorted_pos = want[order]
            which = np.searchsorted(starts, sorted_pos, side="right") - 1
            cuts = np.flatnonzero(np.diff(which)) + 1
            pieces = [
                batches[int(which[a])].take(pa.array(sorted_pos[a:b] - starts[which[a]]))
                for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(want)], strict=True)
            ]
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            yield pa.Table.from_batches(pieces, table.schema).combine_chunks().take(pa.array(inverse))
            outofcore.release(table)


def _look_up(items: Sequence[Any], modality: str, known_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The content hash of each item and its position in the sorted ``known_sorted`` (-1: not there)."""
    encode = _encode_text if modality == "text" else _identity
    hashes = hash_array([content_hash(encode(v)) for v in items])
    at = np.full(len(hashes), -1, dtype=np.int64)
    if len(known_sorted) and len(hashes):
        pos = np.minimum(np.searchsorted(known_sorted, hashes), len(known_sorted) - 1)
        found = known_sorted[pos] == hashes
        at[found] = pos[found]
    return hashes, at


def _read_here(
    dataset: Dataset,
    engine: Engine,
    fn: Any,
    args: tuple[Any, ...],
    known_sorted: np.ndarray,
    batch_size: int,
    description: str,
) -> Iterator[tuple[np.ndarray, np.ndarray, pa.Table | None]]:
    """(hashes, cache positions or -1, fn's result for the rest or None) per batch, read here.

    Only the records the cache lacks go to the engine; batches come back in order, so each result
    belongs to the oldest waiting batch that had something to compute.
    """
    waiting: deque[tuple[np.ndarray, np.ndarray, bool]] = deque()

    def misses() -> Iterator[list[Any]]:
        for batch in content_items(dataset, batch_size):
            hashes, at = _look_up(batch, dataset.modality, known_sorted)
            todo = np.flatnonzero(at < 0)
            waiting.append((hashes, at, len(todo) > 0))
            if len(todo):
                yield [batch[i] for i in todo]

    total_batches = -(-dataset.num_rows // batch_size)
    for result in engine.map_batches(fn, misses(), args=args, description=description, total=total_batches):
        while True:
            hashes, at, has_work = waiting.popleft()
            if has_work:
                yield hashes, at, pa.Table.from_batches([result])
                break
            yield hashes, at, None
    while waiting:
        hashes, at, _ = waiting.popleft()
        yield hashes, at, None


def content_source(dataset: Dataset) -> ContentSource:
    """The :class:`ContentSource` of a text or image dataset."""
    modality = dataset.modality
    if modality == "none":
        raise InputError(f"{dataset.source}: has no text or image column to compute content signals from")
    name = str(getattr(dataset.roles, modality))
    streamed = dataset.streamed_content(modality)
    if streamed is not None:
        files = tuple(str(f) for f in streamed.files)
        return ContentSource(
            modality,
            name,
            dataset.num_rows,
            files,
            filesystem=streamed.filesystem,
            local_copy=streamed.staged is not None,
        )
    return ContentSource(modality, name, dataset.num_rows, chunks=tuple(dataset.table.column(name).chunks))


def signals_of_content(
    table: pa.Table, modality: str, root: str, fn: Any, fn_args: tuple[Any, ...], known_sorted: np.ndarray
) -> pa.Table:
    """Worker side of :class:`ContentEngine`: hash each record, skip the cached ones, compute the rest.

    ``table``'s ``content`` column holds the raw values; ``known_sorted`` the sorted content hashes
    already in the cache. Returns one row per record: ``content_hash``, ``cache_pos`` (its position
    in ``known_sorted``, -1 when computed) and the columns of ``fn(values, *fn_args)`` for the
    computed records (null for the others).
    """
    items = content_values(table.column("content"), modality, root)
    hashes, at = _look_up(items, modality, known_sorted)
    found = at >= 0
    out = pa.table({"content_hash": hash_column(hashes), "cache_pos": pa.array(at, pa.int64())})
    todo = np.flatnonzero(~found)
    if len(todo) == 0:
        return out
    result = pa.Table.from_batches([fn([items[i] for i in todo], *fn_args)])
    if len(todo) < len(items):
        # Back to one row per record: a null index gives a null row where nothing was computed.
        index = np.zeros(len(items), dtype=np.int64)
        index[todo] = np.arange(len(todo))
        result = result.take(pa.array(index, mask=found))
    for name, column in zip(result.column_names, result.columns, strict=True):
        out = out.append_column(name, column)
    return out


def _split_block(block: pa.Table) -> tuple[np.ndarray, np.ndarray, pa.Table | None, list[str]]:
    """(hashes, cache positions or -1, computed rows of fn's columns or None, parts the workers
    stored) of a worker's block."""
    hashes = hashes_of(block.column("content_hash"))
    at = np.asarray(block.column("cache_pos").to_numpy(), dtype=np.int64)
    if "part" in block.column_names:
        return hashes, at, None, [p for p in block.column("part").to_pylist() if p is not None]
    computed = at < 0
    signal_columns = [c for c in block.column_names if c not in ("content_hash", "cache_pos")]
    if not computed.any() or not signal_columns:
        return hashes, at, None, []
    done = block.select(signal_columns)
    if not computed.all():
        done = done.filter(pa.array(computed))
    return hashes, at, done, []


#: Rows at least in a part of the cache that workers store (see ``store_computed``).
STORE_ROWS = 16_384


def store_computed(block: pa.Table, folder: str, fingerprint: str) -> pa.Table:
    """Worker side, after :func:`signals_of_content` when the workers share the workspace: write the
    block's computed rows to the cache as one part (:func:`curata.signals.cache.write_part`) and
    return only ``content_hash``, ``cache_pos`` and ``part``: the part's path on the block's first
    computed row, null elsewhere."""
    at = np.asarray(block.column("cache_pos").to_numpy(), dtype=np.int64)
    computed = np.flatnonzero(at < 0)
    signal_columns = [c for c in block.column_names if c not in ("content_hash", "cache_pos")]
    part: list[str | None] = [None] * block.num_rows
    if len(computed) and signal_columns:
        rows = block.take(pa.array(computed)).select([*signal_columns, "content_hash"])
        part[int(computed[0])] = str(write_part(Path(folder), fingerprint, rows))
    return pa.table(
        {
            "content_hash": block.column("content_hash"),
            "cache_pos": block.column("cache_pos"),
            "part": pa.array(part, pa.string()),
        }
    )


#: Computed rows gathered into one contiguous Arrow table at a time (see ``_compact``).
COMPACT_ROWS = 262_144


def _compact(parts: list[pa.Table]) -> pa.Table:
    """Copy a few batch results into one contiguous table, releasing the results themselves.

    Each result arrives from a worker as its own small buffers (unpickled by the pool's receiving
    thread, between transient allocations); kept for the whole pass they would be scattered over
    the heap for its whole life. Copied into one large Arrow allocation every ``COMPACT_ROWS``
    rows, the small ones are freed and reused for the next batches.
    """
    return pa.concat_tables(parts).combine_chunks()


def _encode_text(value: Any) -> bytes | None:
    return None if value is None else str(value).encode("utf-8", "surrogatepass")


def _identity(value: Any) -> bytes | None:
    return value if value is None or isinstance(value, bytes) else bytes(value)
