"""Per-record work on Ray Data: workers read the content, and ``map_batches`` runs over its blocks.

The content of a Parquet source is read by the workers themselves, through a Ray Data datasource
with one read task per row group (row groups of more than ``MAX_PIECE_ROWS`` rows are split), so
the driver never holds it; content that only the driver holds (CSV, JSON lines, Hugging Face
data, image folders' paths) goes to the object store in blocks once. ``map_batches`` then runs the
per-record function over Arrow batches of ``batch_size`` rows: as fused read-and-map tasks, or on
an actor pool when an argument keeps heavy state (an encoder: its model loads once per actor,
which asks for a GPU when the encoder wants one). Results come back in row order
(``preserve_order``), so the driver assigns them to rows as they stream in.

Large numpy arguments (the sorted hashes of the signal cache) are put into the object store once
and read there by every worker, not shipped with each task.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curata.engine.base import ContentSource, Finish
from curata.progress import progress_bar

if TYPE_CHECKING:
    from collections.abc import Sequence

#: A read task covers one row group, or this many rows of a larger one (a task is the unit that
#: Ray retries and that the signal cache keeps when a run fails).
MAX_PIECE_ROWS = 262_144
#: Rows per object-store block of content held by the driver.
BLOCK_ROWS = 65_536
#: numpy arguments larger than this go to the object store once instead of with every task.
STORE_ARG_BYTES = 1 << 20


class Stored:
    """An argument kept in the object store; workers read it once per process."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref


_RESOLVED: dict[str, Any] = {}


def _resolve(args: Sequence[Any]) -> tuple[Any, ...]:
    """``args`` with every :class:`Stored` replaced by its value (read once per worker process)."""
    if not any(isinstance(a, Stored) for a in args):
        return tuple(args)
    import ray

    out = []
    for a in args:
        if isinstance(a, Stored):
            key = a.ref.hex()
            if key not in _RESOLVED:
                _RESOLVED.clear()  # one run's arguments at a time
                _RESOLVED[key] = ray.get(a.ref)
            out.append(_RESOLVED[key])
        else:
            out.append(a)
    return tuple(out)


def run_on_block(table: pa.Table, fn: Callable[..., pa.Table], *args: Any) -> pa.Table:
    """Ray Data task: ``fn(table, *args)`` with stored arguments resolved."""
    return fn(table, *_resolve(args))


class BlockActor:
    """Ray Data actor: keeps one copy of the function and its arguments (an encoder and its model)."""

    def __init__(self, fn: Callable[..., pa.Table], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = _resolve(args)

    def __call__(self, table: pa.Table) -> pa.Table:
        """``fn(table, *args)``."""
        return self._fn(table, *self._args)


def _pieces(source: ContentSource) -> list[tuple[str, int, int, int]]:
    """(file, row group, first row, end row) of every read task, in row order."""
    import pyarrow.parquet as pq

    pieces: list[tuple[str, int, int, int]] = []
    for path in source.files:
        meta = pq.ParquetFile(path, filesystem=source.filesystem).metadata
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            for start in range(0, rows, MAX_PIECE_ROWS):
                pieces.append((path, group, start, min(rows, start + MAX_PIECE_ROWS)))
    return pieces


def read_piece(
    path: str, filesystem: Any, column: str, group: int, start: int, stop: int
) -> Iterator[pa.Table]:
    """Read task: rows ``[start, stop)`` of a row group's content column, as a ``content`` table."""
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(path, filesystem=filesystem, pre_buffer=False, buffer_size=1 << 22)
    rows = reader.metadata.row_group(group).num_rows
    if start == 0 and stop == rows:
        values = reader.read_row_group(group, columns=[column]).column(0)
        yield pa.table({"content": values})
        return
    seen = 0
    for batch in reader.iter_batches(batch_size=1 << 16, row_groups=[group], columns=[column]):
        lo, hi = max(start - seen, 0), min(stop - seen, batch.num_rows)
        if hi > lo:
            yield pa.table({"content": batch.column(0).slice(lo, hi - lo)})
        seen += batch.num_rows
        if seen >= stop:
            return


def _parquet_datasource(source: ContentSource, pieces: list[tuple[str, int, int, int]]) -> Any:
    """A Ray Data datasource with one read task per piece of the source's Parquet files."""
    data: Any = importlib.import_module("ray.data")
    from ray.data.block import BlockMetadata

    class ContentDatasource(data.Datasource):  # type: ignore[misc, name-defined]
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[Any]:
            # One task per piece whatever parallelism Ray suggests: pieces are the unit of retry.
            tasks = []
            for path, group, start, stop in pieces:
                meta = BlockMetadata(
                    num_rows=stop - start, size_bytes=None, exec_stats=None, input_files=(path,)
                )
                read = functools.partial(
                    read_piece, path, source.filesystem, source.column, group, start, stop
                )
                tasks.append(data.ReadTask(read, meta))
            return tasks

    return ContentDatasource()


def content_dataset(ray: Any, source: ContentSource, read_cpus: float = 1) -> Any:
    """The Ray Data dataset of the source's content (one ``content`` column), in row order.

    ``read_cpus``: CPUs a read task asks for; 0 when an actor pool holds the CPUs (a read task
    waiting for a CPU that the actors hold would stall the run).
    """
    data: Any = importlib.import_module("ray.data")
    if workers_read(ray, source):
        pieces = _pieces(source)
        return data.read_datasource(
            _parquet_datasource(source, pieces), override_num_blocks=max(1, len(pieces)), num_cpus=read_cpus
        )
    refs = [ray.put(pa.table({"content": values})) for _, values in driver_blocks(source)]
    if not refs:
        refs.append(ray.put(pa.table({"content": pa.array([], pa.string())})))
    return data.from_arrow_refs(refs)


def multi_node(ray: Any) -> bool:
    """Whether the cluster has more than one live node."""
    return sum(1 for node in ray.nodes() if node.get("Alive")) > 1


def workers_read(ray: Any, source: ContentSource) -> bool:
    """Whether the workers read the source's files themselves (not when the files are copies on
    this machine and the cluster has other machines)."""
    return bool(source.files) and not (source.local_copy and multi_node(ray))


def driver_blocks(source: ContentSource) -> Iterator[tuple[int, pa.Array]]:
    """(first row, values) of the content in blocks of ``BLOCK_ROWS``, read by this process: the
    chunks it holds, or its files one batch at a time."""
    import pyarrow.parquet as pq

    first = 0
    if source.files:
        for path in source.files:
            reader = pq.ParquetFile(path, filesystem=source.filesystem, pre_buffer=False)
            for batch in reader.iter_batches(batch_size=BLOCK_ROWS, columns=[source.column]):
                yield first, batch.column(0)
                first += batch.num_rows
        return
    for chunk in source.chunks:
        for start in range(0, len(chunk), BLOCK_ROWS):
            block = chunk.slice(start, BLOCK_ROWS)
            yield first, block
            first += len(block)


def store_large(ray: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with large numpy arrays put into the object store (see :class:`Stored`)."""
    return tuple(
        Stored(ray.put(a)) if isinstance(a, np.ndarray) and a.nbytes > STORE_ARG_BYTES else a for a in args
    )


@contextmanager
def data_context(*, preserve_order: bool = False) -> Iterator[None]:
    """Ray Data settings for one of curata's runs, restored afterwards.

    Always quiet (no progress bars or start-up notices: curata shows its own progress).
    ``preserve_order``: blocks come out in input order (per-record results are assigned to rows
    as they arrive).
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    options = ctx.execution_options
    fields = ("enable_progress_bars", "print_on_execution_start")
    saved = options.preserve_order, {name: getattr(ctx, name) for name in fields}
    if preserve_order:
        options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        options.preserve_order = saved[0]
        for name, value in saved[1].items():
            setattr(ctx, name, value)
        data_logger.setLevel(level)


@dataclass(frozen=True)
class ContentPlan:
    """A ``map_content`` run: the source, the function and how Ray Data runs it.

    ``actors``: the size of the actor pool, 0 for plain tasks; ``args`` may hold :class:`Stored`.
    ``finish``: a second map over fn's outputs, in larger batches (see :class:`Finish`).
    """

    source: ContentSource
    fn: Callable[..., pa.Table]
    args: tuple[Any, ...]
    batch_size: int
    actors: int
    gpu: bool
    max_retries: int
    finish: Finish | None = None

    def run(self) -> Iterator[pa.Table]:
        """Run the plan on Ray Data from this process and yield its output blocks in row order."""
        import ray

        options: dict[str, Any] = {
            "batch_size": self.batch_size,
            "batch_format": "pyarrow",
            "num_cpus": 1,
            "num_gpus": 1 if self.gpu else 0,
        }
        with data_context(preserve_order=True), warnings.catch_warnings():
            # Retry counts go to Ray as remote arguments, which Ray 2.60 calls deprecated but honours.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = content_dataset(ray, self.source, read_cpus=0 if self.actors else 1)
            if self.actors:
                dataset = dataset.map_batches(
                    BlockActor,
                    fn_constructor_args=(self.fn, self.args),
                    concurrency=self.actors,
                    max_restarts=self.max_retries,
                    max_task_retries=self.max_retries,
                    **options,
                )
            else:
                dataset = dataset.map_batches(
                    run_on_block, fn_args=(self.fn, *self.args), max_retries=self.max_retries, **options
                )
            if self.finish is not None:
                # While an actor pool holds the CPUs, the second step asks for none (as the reads).
                dataset = dataset.map_batches(
                    run_on_block,
                    fn_args=(self.finish.fn, *self.finish.args),
                    batch_size=max(self.finish.rows, self.batch_size),
                    batch_format="pyarrow",
                    num_cpus=0 if self.actors else 1,
                    max_retries=self.max_retries,
                )
            yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)


class PlanStream:
    """Ray actor: runs a :class:`ContentPlan` on the cluster and hands its blocks out in order."""

    def __init__(self, plan: ContentPlan) -> None:
        self._blocks = plan.run()

    def next_blocks(self, count: int) -> list[pa.Table]:
        """Up to ``count`` next blocks; an empty list at the end."""
        out: list[pa.Table] = []
        for block in self._blocks:
            out.append(block)
            if len(out) >= count:
                break
        return out


def stream_from_actor(ray: Any, plan: ContentPlan) -> Iterator[pa.Table]:
    """The plan's blocks, run by a :class:`PlanStream` actor (for Ray Client drivers)."""
    actor = ray.remote(PlanStream).options(num_cpus=0).remote(plan)
    try:
        while True:
            blocks = ray.get(actor.next_blocks.remote(4))
            if not blocks:
                return
            yield from blocks
    finally:
        ray.kill(actor)


def stream_blocks(
    blocks: Iterable[pa.Table], total_rows: int, batch_size: int, description: str
) -> Iterator[pa.Table]:
    """The blocks, passed on in order, moving a progress bar counted in batches."""
    total = -(-total_rows // batch_size)
    done_rows = 0
    with progress_bar(description, total) as advance:
        for block in blocks:
            before = done_rows // batch_size
            done_rows += block.num_rows
            advance((done_rows // batch_size if done_rows < total_rows else total) - before)
            yield block


def content_pieces(ray: Any, source: ContentSource, rows: np.ndarray) -> Iterator[tuple[int, Any, Any]]:
    """(first row, Parquet piece or None, object-store block or None) of every piece of the content
    that holds one of ``rows`` (ascending): a piece is a read task's (file, filesystem, column, row
    group, start, stop), or a block of content held by this process, put in the object store."""
    if workers_read(ray, source):
        first = 0
        for path, group, start, stop in _pieces(source):
            end = first + stop - start
            lo, hi = np.searchsorted(rows, [first, end])
            if hi > lo:
                yield first, (path, source.filesystem, source.column, group, start, stop), None
            first = end
        return
    for first, block in driver_blocks(source):
        lo, hi = np.searchsorted(rows, [first, first + len(block)])
        if hi > lo:
            yield first, None, ray.put(block)


#: Candidate records per map task and per reduce task of ``map_partitions``' shuffle (at least two
#: of each per worker). Grouping row groups into map tasks and partitions into reduce tasks keeps
#: the number of shuffle objects (maps x reduces) from growing with the square of the data.
SHUFFLE_ROWS = 262_144

#: A piece of content as ``content_pieces`` yields it: (first row, Parquet piece, block).
Piece = tuple[int, Any, Any]


def group_pieces(pieces: list[Piece], tasks: int) -> list[list[Piece]]:
    """The pieces in ``tasks`` runs of consecutive pieces (as equal in number as can be)."""
    tasks = max(1, min(tasks, len(pieces)))
    cuts = [len(pieces) * t // tasks for t in range(tasks + 1)]
    return [pieces[a:b] for a, b in itertools.pairwise(cuts)]


def bundle_partitions(part: np.ndarray, parts: int, bundles: int) -> np.ndarray:
    """A bundle (reduce task) per partition: runs of consecutive partitions holding about equal
    numbers of records (``part``: each record's partition, -1 for none)."""
    bundles = max(1, min(bundles, parts))
    sizes = np.bincount(part[part >= 0], minlength=parts).astype(np.int64)
    before = np.cumsum(sizes) - sizes
    total = max(int(sizes.sum()), 1)
    bundle: np.ndarray = np.minimum(before * bundles // total, bundles - 1)
    return bundle


def task_returns(out: list[Any]) -> Any:
    """A map task's outputs as its Ray returns: the list, or its one item when ``num_returns`` is 1."""
    return out if len(out) > 1 else out[0]


def split_pieces(
    pieces: list[tuple[int, Any]],
    rows: np.ndarray,
    part: np.ndarray,
    bundle_of: np.ndarray,
    bundles: int,
    *blocks: pa.Array,
) -> Any:
    """Map task: the records among ``rows`` held by ``pieces`` (consecutive (first row, Parquet
    piece or None) pairs, each read in turn; ``blocks`` hold, in order, the content of those
    without a Parquet piece), split by bundle: a table (``pos``: position in ``rows``,
    ``content``) per bundle, in row order (one table when ``bundles`` is 1)."""
    positions: list[np.ndarray] = [np.zeros(0, np.int64)]
    taken: list[pa.Array] = []
    held = iter(blocks)
    for first, piece in pieces:
        if piece is not None:
            values: pa.Array = pa.concat_arrays(
                [c for t in read_piece(*piece) for c in t.column("content").chunks]
            )
        else:
            values = next(held)
        lo, hi = (int(i) for i in np.searchsorted(rows, [first, first + len(values)]))
        positions.append(np.arange(lo, hi, dtype=np.int64))
        taken.append(values.take(pa.array(rows[lo:hi] - first)))
        del values
    pos = np.concatenate(positions)
    content = pa.chunked_array(taken) if taken else pa.chunked_array([], pa.large_string())
    where = np.asarray(part[pos], dtype=np.int64)
    target = np.full(len(pos), -1, dtype=np.int64)
    target[where >= 0] = bundle_of[where[where >= 0]]
    order = np.argsort(target, kind="stable")
    bounds = np.searchsorted(target[order], np.arange(bundles + 1))
    out = []
    for b in range(bundles):
        idx = pa.array(order[bounds[b] : bounds[b + 1]])
        out.append(pa.table({"pos": pos.take(idx), "content": content.take(idx)}))
    return task_returns(out)


def run_bundle(
    fn: Callable[..., Any],
    jobs: list[tuple[int, Any]],
    args: tuple[Any, ...],
    part: np.ndarray,
    *tables: pa.Table,
) -> list[Any]:
    """Reduce task: ``fn(values, job, *args)`` for each (partition, job) of ``jobs``, on that
    partition's records (the map tasks' tables for the bundle, which arrive in row order)."""
    table = pa.concat_tables(tables, promote_options="permissive")
    where = np.asarray(part[table.column("pos").to_numpy()], dtype=np.int64)
    order = np.argsort(where, kind="stable")
    content = table.column("content")
    results = []
    for p, job in jobs:
        a, b = np.searchsorted(where[order], [p, p + 1])
        values = content.take(pa.array(order[a:b])).combine_chunks()
        results.append(fn(values, job, *args))
    return results
