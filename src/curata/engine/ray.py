"""The Ray engine: the local engine's per-record functions on Ray Data, cross-record steps as shuffles.

The per-record signals (``map_content``, see :mod:`curata.engine.ray_content`) run on Ray Data:
workers read the content (Parquet by row groups; what the driver holds, from the object store),
hash it, skip what the signal cache holds and run the function with ``map_batches`` over Arrow
batches, encoders on an actor pool (a model loads once per actor, which asks for a GPU when the
encoder wants one); blocks come back in row order. When every node reaches the workspace
(:meth:`RayEngine.reaches`), a second map step on the workers writes what they computed into the
signal cache, and the blocks that come back hold only each record's hash and cache position.

``map_batches`` (batches made on the driver: the cross-record steps' shares of work, such as
semantic dedup's per-cluster searches) runs one Ray task per batch, at most ``2 * workers`` in
flight, results yielded in input order, a task whose worker died re-run by Ray (``max_retries``).
Arguments holding heavy lazily loaded state go to an actor pool instead, each actor keeping one
copy of the function and its arguments for the run; a dead actor is restarted and its batches
re-run (``max_restarts`` / ``max_task_retries``). With no more batches than actors, plain tasks do
the same number of loads without starting actors, so they are used then.

The cross-record steps are shuffles of plain tasks. ``bucket_pairs`` (LSH candidate pairs): map
tasks split chunks of band keys into (band, key, row) entries by a hash of (band, key), reduce
tasks emit every bucket's pairs (with the capped buckets of :func:`curata.lsh.candidate_pairs`)
split by ranges of the first row, merge tasks drop pairs found in several bands, and only the
unique pairs come back to the driver. ``group_representatives`` (exact-duplicate groups, exact
matches against a reference): map tasks split (key, row, rank) entries by a hash of the key, one
reduce task per partition picks each repeated key's row of lowest rank, and only the rows of
repeated keys come back. ``connected_components`` (duplicate clusters) keeps the edges in the
object store and iterates hook-and-jump rounds. ``nearest_neighbours`` holds a shard of the rows
per actor and scatters query blocks to every shard. Inputs given as a
:class:`~curata.engine.base.ColumnRows` kept in the signal cache's files are read there by the
map tasks, shards and query reads themselves; other inputs go to the object store from the
driver.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa

from curata import outofcore
from curata.engine.base import (
    ColumnRows,
    ContentSource,
    Finish,
    file_pieces,
    key_column,
    read_file_rows,
)
from curata.engine.ray_content import task_returns
from curata.errors import ConfigError, EngineError, MissingDependencyError
from curata.progress import progress_bar

if TYPE_CHECKING:
    from curata.knn import Metric, Neighbours

R = TypeVar("R")

#: Encoders whose model runs on torch and so gains from a GPU (an encoder may say so itself with a
#: ``wants_gpu`` attribute).
TORCH_ENCODERS = frozenset({"minilm", "efficientnet-lite0", "ssl"})
#: (band, key, row) rows per shuffle partition of ``bucket_pairs`` (~100 MB a group), and (key,
#: row, rank) entries per partition of ``group_representatives``.
PARTITION_KEYS = 4_000_000
#: Edges per block put into the object store by ``connected_components`` (entries by
#: ``group_representatives``).
CHUNK_KEYS = 1_000_000
#: Band keys per map task of ``bucket_pairs``' shuffle (about 10 bytes each once split).
MAP_KEYS = 4_000_000
#: Query rows searched at once in every shard of a distributed nearest-neighbour search.
KNN_QUERY_ROWS = 8_192
#: Seconds to wait for a TCP answer from a cluster address before giving up (ray.init would
#: otherwise retry for minutes).
CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for every node's answer to ``RayEngine.reaches``.
REACH_TIMEOUT_S = 60.0

#: Environment variables (by prefix) passed on to the workers: object stores' credentials and
#: endpoints, which workers need to read the data.
FORWARDED_ENV = ("AWS_", "GOOGLE_", "GCS_", "AZURE_")

_MIX = np.uint64(0x9E3779B97F4A7C15)


def import_ray() -> Any:
    """Import ray, or raise MissingDependencyError naming the ``ray`` extra."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    return ray


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters (errors stay one line)."""
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _step_failed(step: str, exc: BaseException) -> EngineError:
    """The error for a cross-record step that Ray could not finish (retries spent, node lost)."""
    return EngineError(f"ray engine: {step} failed ({type(exc).__name__}: {_reason(exc)})")


def _no_cluster(address: str | None, reason: str) -> str:
    shown = address or "(local)"
    return (
        f"cannot connect to a Ray cluster at {shown} ({reason}): start one with `ray start --head` "
        "and pass --ray-address auto, HOST:6379 or ray://HOST:10001 (a cluster with token "
        "authentication also needs RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
    )


def _check_reachable(address: str) -> None:
    """Fail at once when nothing answers at ``address`` (HOST:PORT or ray://HOST:PORT)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray-address '{address}': expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(_no_cluster(address, exc.strerror or type(exc).__name__)) from None


def _join_token_auth() -> None:
    """Send the Ray auth token when one is at hand, as ``ray start`` does for the clusters it makes.

    ``ray start`` turns token authentication on when a token exists (``~/.ray/auth_token``, made by
    any local ``ray.init``), but a driver joining by HOST:PORT sends none unless RAY_AUTH_MODE says
    so, and is refused. Set before Ray is first imported (it reads the mode once); a cluster
    without authentication ignores the token.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def connect(address: str | None, workers: int | None) -> Any:
    """Connect this process to Ray (once) and return the ``ray`` module.

    ``address`` None starts a Ray instance inside this process with ``workers`` CPUs (or joins the
    cluster that ``RAY_ADDRESS`` names, as ``ray.init`` does); ``auto`` joins the cluster started
    on this machine with ``ray start``. A process already connected keeps its connection.
    """
    if "ray" not in sys.modules:
        _join_token_auth()
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's own notices stay quiet; what goes wrong reaches curata as exceptions.
    options: dict[str, Any] = {"namespace": "curata", "logging_level": logging.ERROR}
    # Workers read the data themselves: they get the driver's object-store credentials and endpoints.
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    if forwarded:
        options["runtime_env"] = {"env_vars": forwarded}
    if address is None:
        options.update(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        if address != "auto":
            _check_reachable(address)
        if not address.startswith("ray://"):
            options["log_to_driver"] = False
    # A Ray client proxy starts one server per connecting driver; on a busy head that start-up can
    # fail transiently ("Initialization failure from server"), so a ray:// address gets 3 tries.
    tries = 3 if address is not None and address.startswith("ray://") else 1
    for attempt in range(tries):
        try:
            ray.init(address=address, **options)
            break
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt + 1 < tries and "Initialization failure" in reason:
                time.sleep(2.0 * (attempt + 1))
                continue
            raise ConfigError(_no_cluster(address, reason)) from None
    return ray


def keeps_state(obj: Any) -> bool:
    """Whether ``obj`` should stay in one worker for the run (an encoder, or ``keep_per_worker``)."""
    flag = getattr(obj, "keep_per_worker", None)
    if flag is not None:
        return bool(flag)
    from curata.signals.embed.base import Encoder

    return isinstance(obj, Encoder)


def wants_gpu(obj: Any) -> bool:
    """Whether ``obj`` (an encoder) runs faster on a GPU: its ``wants_gpu``, else torch encoders."""
    flag = getattr(obj, "wants_gpu", None)
    if flag is not None:
        return bool(flag)
    return keeps_state(obj) and getattr(obj, "name", None) in TORCH_ENCODERS


def run_batch(call: tuple[Callable[..., Any], tuple[Any, ...]], batch: Any) -> Any:
    """Ray task: ``fn(batch, *args)``."""
    fn, args = call
    return fn(batch, *args)


class BatchActor:
    """Keeps one copy of a function and its arguments (e.g. an encoder and its loaded model)."""

    def __init__(self, call: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
        self._fn, self._args = call

    def run(self, batch: Any) -> Any:
        """``fn(batch, *args)`` with the arguments this actor holds."""
        return self._fn(batch, *self._args)


class _Tasks:
    """One retried Ray task per batch; the function and arguments are shipped once."""

    def __init__(
        self, ray: Any, fn: Callable[..., Any], args: tuple[Any, ...], gpu: bool, retries: int
    ) -> None:
        self._ray = ray
        self._call = ray.put((fn, args))
        self._remote = ray.remote(run_batch).options(
            num_cpus=1, num_gpus=1 if gpu else 0, max_retries=retries
        )

    def submit(self, batch: Any) -> Any:
        return self._remote.remote(self._call, batch)

    def close(self, pending: Iterable[Any]) -> None:
        for ref in pending:
            self._ray.cancel(ref)


class _Actors:
    """A pool of ``BatchActor``s, created on the first batch, fed round-robin, killed at the end."""

    def __init__(
        self, ray: Any, fn: Callable[..., Any], args: tuple[Any, ...], size: int, gpu: bool, retries: int
    ) -> None:
        self._ray = ray
        # By value, not as an object-store reference: a restarted actor must find its arguments.
        self._call = (fn, args)
        self._size = size
        self._options: dict[str, Any] = {
            "num_cpus": 1,
            "num_gpus": 1 if gpu else 0,
            "max_restarts": retries,
            "max_task_retries": retries,
        }
        self._actors: list[Any] = []
        self._next = 0

    def submit(self, batch: Any) -> Any:
        if not self._actors:
            cls = self._ray.remote(BatchActor).options(**self._options)
            self._actors = [cls.remote(self._call) for _ in range(self._size)]
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return actor.run.remote(batch)

    def close(self, pending: Iterable[Any]) -> None:
        for actor in self._actors:
            self._ray.kill(actor)


class RayEngine:
    """Runs per-record functions on Ray Data (encoders on actor pools) and cross-record steps as shuffles.

    ``address``: None starts Ray in this process, ``auto`` joins the cluster ``ray start`` made
    here, ``HOST:PORT`` or ``ray://HOST:PORT`` a remote one. ``workers`` bounds the batches in
    flight (``2 * workers``) and the actors per pool; by default, the cluster's CPUs. Worker
    machines need curata installed, as the driver's.
    """

    name = "ray"
    distributed = True

    def __init__(
        self, address: str | None = None, workers: int | None = None, *, max_retries: int = 3
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be at least 0, got {max_retries}")
        self.address = address
        self.max_retries = max_retries
        self._ray = connect(address, workers)
        resources = self._ray.cluster_resources()
        self.workers = workers or max(1, int(resources.get("CPU", 1)))
        self.gpus = int(resources.get("GPU", 0))
        self._reaches: dict[str, bool] = {}

    def map_batches(
        self,
        fn: Callable[..., R],
        batches: Iterable[Any],
        *,
        args: tuple[Any, ...] = (),
        description: str = "",
        total: int | None = None,
    ) -> Iterator[R]:
        """Yield ``fn(batch, *args)`` for each batch, in input order."""
        runner: _Tasks | _Actors
        gpu = self.gpus > 0 and any(wants_gpu(a) for a in args)
        size = max(1, min(self.workers, self.gpus)) if gpu else self.workers
        # An actor pool pays only when batches outnumber its actors: with fewer, each batch loads
        # the state once either way, and tasks start on workers that are already running.
        if any(keeps_state(a) for a in args) and (total is None or total > size):
            runner = _Actors(self._ray, fn, args, size, gpu, self.max_retries)
        else:
            runner = _Tasks(self._ray, fn, args, gpu, self.max_retries)
        max_in_flight = 2 * size
        pending: deque[tuple[int, Any]] = deque()
        with progress_bar(description, total) as advance:
            try:
                for index, batch in enumerate(batches):
                    pending.append((index, runner.submit(batch)))
                    if len(pending) >= max_in_flight:
                        yield self._result(*pending.popleft())
                        advance(1)
                while pending:
                    yield self._result(*pending.popleft())
                    advance(1)
            finally:
                runner.close(ref for _, ref in pending)

    def map_content(
        self,
        source: ContentSource,
        fn: Callable[..., pa.Table],
        *,
        args: tuple[Any, ...],
        batch_size: int,
        description: str,
        finish: Finish | None = None,
    ) -> Iterator[pa.Table]:
        """Yield ``fn(table, *args)`` over the source's content on Ray Data, in row order.

        Workers read Parquet content themselves (a read task per row group); ``map_batches`` runs
        ``fn`` on batches of ``batch_size`` rows, on an actor pool when an argument keeps state;
        ``finish`` runs a second ``map_batches`` over fn's outputs on the workers.
        """
        from curata.engine import ray_content

        ray = self._ray
        members = [*args, *(m for a in args if isinstance(a, tuple) for m in a)]
        gpu = self.gpus > 0 and any(wants_gpu(a) for a in members)
        actors = any(keeps_state(a) for a in members)
        plan = ray_content.ContentPlan(
            source=source,
            fn=fn,
            args=ray_content.store_large(ray, args),
            batch_size=batch_size,
            actors=(max(1, min(self.workers, self.gpus)) if gpu else self.workers) if actors else 0,
            gpu=gpu,
            max_retries=self.max_retries,
            finish=finish,
        )
        # Ray Data does not run through a Ray Client (ray://) driver: there an actor on the cluster
        # runs the plan and hands the blocks over in order.
        client = self.address is not None and self.address.startswith("ray://")
        try:
            blocks = ray_content.stream_from_actor(ray, plan) if client else plan.run()
            yield from ray_content.stream_blocks(blocks, source.num_rows, batch_size, description)
        except ray.exceptions.RayError as exc:
            raise self._lost(exc) from None

    def map_partitions(
        self,
        source: ContentSource,
        rows: np.ndarray,
        part: np.ndarray,
        jobs: Sequence[Any],
        fn: Callable[..., Any],
        *,
        args: tuple[Any, ...],
        description: str,
    ) -> Iterator[Any]:
        """``fn(values, jobs[p], *args)`` per partition, as a shuffle on the cluster.

        A map task per run of consecutive pieces of the content that hold some of ``rows`` (Parquet
        row groups, read by the task) splits those records by bundle, one return per bundle; a
        bundle is a run of consecutive partitions, and a task per bundle gathers its records from
        every map task and runs ``fn`` on each of its partitions. About ``SHUFFLE_ROWS`` records a
        task, at least two tasks a worker. This process only submits the tasks and receives fn's
        results, in partition order.
        """
        from curata.engine import ray_content

        ray = self._ray
        parts = len(jobs)
        if parts == 0:
            return
        rows = np.asarray(rows, dtype=np.int64)
        part = np.asarray(part, dtype=np.int32)
        tasks = max(2 * self.workers, math.ceil(len(rows) / ray_content.SHUFFLE_ROWS))
        bundle_of = ray_content.bundle_partitions(part, parts, tasks)
        bundles = int(bundle_of.max()) + 1
        rows_ref, part_ref, bundle_ref = ray.put(rows), ray.put(part), ray.put(bundle_of)
        split = ray.remote(ray_content.split_pieces).options(
            num_cpus=1, num_returns=bundles, max_retries=self.max_retries
        )
        runs = ray_content.group_pieces(list(ray_content.content_pieces(ray, source, rows)), tasks)
        # Blocks held by this process go as top-level arguments: Ray resolves only those.
        mapped = [
            _as_list(
                split.remote(
                    [(first, piece) for first, piece, _ in run],
                    *(rows_ref, part_ref, bundle_ref, bundles),
                    *(block for _, piece, block in run if piece is None),
                ),
                bundles,
            )
            for run in runs
        ]
        reduce = ray.remote(ray_content.run_bundle).options(num_cpus=1, max_retries=self.max_retries)
        members = [np.flatnonzero(bundle_of == b) for b in range(bundles)]
        results = []
        for b in range(bundles):
            own = [(int(p), jobs[int(p)]) for p in members[b]]
            results.append(reduce.remote(fn, own, args, part_ref, *(out[b] for out in mapped)))
        del mapped
        with progress_bar(description, parts) as advance:
            for ref, bundle in zip(results, members, strict=True):
                try:
                    values = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise self._lost(exc) from None
                advance(len(bundle))
                yield from values

    def reaches(self, folder: Path) -> bool:
        """Whether a task on every live node of the cluster reads a file this process writes under
        ``folder`` and writes one there itself: a shared workspace (the answer is kept per folder;
        nodes that join later are not asked)."""
        key = str(Path(folder).resolve())
        if key not in self._reaches:
            self._reaches[key] = self._probe(Path(key))
        return self._reaches[key]

    def _probe(self, folder: Path) -> bool:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self._ray
        try:
            folder.mkdir(parents=True, exist_ok=True)
            token = uuid.uuid4().hex
            probe = folder / f".reach-{token}"
            probe.write_text(token)
        except OSError:
            return False
        try:
            nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
            check = ray.remote(sees_probe)
            refs = [
                check.options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
                ).remote(str(probe), token)
                for node in nodes
            ]
            return bool(nodes) and all(ray.get(refs, timeout=REACH_TIMEOUT_S))
        except Exception:  # any failure to ask means: not shared
            return False
        finally:
            probe.unlink(missing_ok=True)

    def _lost(self, exc: BaseException) -> BaseException:
        """The function's own exception when it raised one, else a one-line EngineError."""
        ray = self._ray
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            cause = getattr(current, "cause", None)
            if isinstance(current, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
                current = cause
                continue
            if (
                not isinstance(current, ray.exceptions.RayError)
                and type(current).__module__.split(".")[0] != "ray"
            ):
                return current
            current = current.__cause__
        return EngineError(
            f"ray engine: a batch was lost after {self.max_retries} retries ({type(exc).__name__}: "
            f"{_reason(exc)}); re-run to go on (signals already computed are read from the workspace cache)"
        )

    def _result(self, index: int, ref: Any) -> Any:
        """The value of a batch's task: its own exception when the function raised, else EngineError."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:
            raise EngineError(
                f"ray engine: batch {index} was lost after {self.max_retries} retries "
                f"({type(exc).__name__}: {_reason(exc)}); re-run to go on (signals already computed are "
                "read from the workspace cache)"
            ) from None

    def bucket_pairs(self, band_keys: np.ndarray | ColumnRows, max_bucket: int | None = None) -> np.ndarray:
        """Rows sharing a band key (as :func:`curata.lsh.candidate_pairs`), by a shuffle of tasks.

        The map tasks read the band keys from the signal cache's files themselves when they are
        there and every node reaches them (:meth:`reaches`); otherwise this process sends them.
        """
        from curata.lsh import DEFAULT_MAX_BUCKET

        limit = DEFAULT_MAX_BUCKET if max_bucket is None else max_bucket
        if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 2:
            raise ConfigError(f"max_bucket must be an integer >= 2, got {limit!r}")
        stored = self._stored(band_keys)
        if stored is not None:
            column = stored.column
            if isinstance(column, pa.ChunkedArray) and not pa.types.is_integer(column.type.value_type):
                raise ConfigError(f"band_keys must hold integers, got {column.type.value_type}")
            n, bands = len(stored), stored.width
            if n < 2 or bands == 0:
                return np.zeros((0, 2), dtype=np.int64)
            return self._shuffle_pairs(self._stored_key_maps(stored), n, bands, int(limit))
        keys = band_keys.to_array() if isinstance(band_keys, ColumnRows) else np.asarray(band_keys)
        if keys.ndim != 2:
            raise ConfigError(f"band_keys must be a 2-D (rows, bands) array, got shape {keys.shape}")
        if keys.size and not np.issubdtype(keys.dtype, np.integer):
            raise ConfigError(f"band_keys must hold integers, got {keys.dtype}")
        n, bands = keys.shape
        if n < 2 or bands == 0:
            return np.zeros((0, 2), dtype=np.int64)
        parts = self._key_parts(n, bands)
        split = ray_remote(self, split_band_keys, returns=parts)
        rows_per_chunk = max(1, MAP_KEYS // bands)
        mapped = (
            split.remote(np.ascontiguousarray(keys[s : s + rows_per_chunk]), s, parts)
            for s in range(0, n, rows_per_chunk)
        )
        return self._shuffle_pairs(mapped, n, bands, int(limit))

    def _stored(self, value: Any) -> ColumnRows | None:
        """``value`` when it is a :class:`ColumnRows` kept in files every node reaches, else None."""
        return value if isinstance(value, ColumnRows) and value.stored_for(self.reaches) else None

    def _key_parts(self, n: int, bands: int) -> int:
        return max(self.workers, math.ceil(n * bands / PARTITION_KEYS))

    def _stored_key_maps(self, stored: ColumnRows) -> Iterator[Any]:
        """The shuffle's map tasks over stored band keys: each reads about ``MAP_KEYS`` keys of the
        selected rows from consecutive files of the cache and splits them by a hash of (band, key)."""
        n, bands = len(stored), stored.width
        parts = self._key_parts(n, bands)
        split = ray_remote(self, split_stored_keys, returns=parts)
        per_task = max(1, MAP_KEYS // bands)
        for a in range(0, n, per_task):
            pieces, rows = stored_slice(stored, a, min(n, a + per_task))
            yield split.remote(pieces, stored.name, rows, a, parts)

    def _shuffle_pairs(self, mapped_refs: Iterable[Any], n: int, bands: int, max_bucket: int) -> np.ndarray:
        ray = self._ray
        parts = self._key_parts(n, bands)
        bucket = ray.remote(bucket_pair_codes).options(
            num_cpus=1, num_returns=parts, max_retries=self.max_retries
        )
        merge = ray.remote(merge_codes).options(num_cpus=1, max_retries=self.max_retries)
        # Map: each chunk of rows split by a hash of (band, key). Reduce: every bucket's pairs,
        # split by ranges of the pair's first row. Merge: one range's distinct pairs. Each stage's
        # refs are dropped once the next is submitted, so Ray frees an output when its reader ends.
        mapped = [_as_list(refs, parts) for refs in mapped_refs]
        reduced = [
            _as_list(bucket.remote(max_bucket, n, parts, *(out[p] for out in mapped)), parts)
            for p in range(parts)
        ]
        del mapped
        merged = [merge.remote(*(out[r] for out in reduced)) for r in range(parts)]
        del reduced
        # Each range's codes are held as they come, in a file-backed array once those held pass
        # ``max_in_memory_rows`` (an ``outofcore.spill_array``), then written out as pairs by chunks.
        settings = outofcore.current()
        codes: list[np.ndarray] = []
        held = 0
        try:
            for ref in merged:
                part = ray.get(ref)
                held += len(part)
                if held > settings.max_in_memory_rows:
                    kept = outofcore.spill_array((len(part),), np.int64)
                    kept[:] = part
                    outofcore.release_rows(kept, 0, len(part))
                    part = kept
                codes.append(part)
        except ray.exceptions.RayError as exc:
            raise _step_failed("the LSH bucket shuffle", exc) from None
        del merged
        # Ranges come in order and each is sorted: together they are sorted as candidate_pairs'.
        out = outofcore.row_array(held, np.int64, width=2)
        at = 0
        for part in codes:
            for lo, hi in outofcore.row_chunks(len(part)):
                code = np.asarray(part[lo:hi])
                out[at + lo : at + hi, 0], out[at + lo : at + hi, 1] = code // n, code % n
                outofcore.release_rows(out, at + lo, at + hi)
            at += len(part)
        return out

    def connected_components(self, n: int, pairs: np.ndarray) -> np.ndarray:
        """A label per row: the lowest row of its connected component over ``pairs`` (m x 2 rows).

        The edges stay in the object store in chunks; each round, tasks find the edges whose ends
        still have different labels and propose to hook the larger label onto the smaller, the
        driver applies the proposals to the label vector (one int64 a row, the size of the result)
        and follows the pointers to their roots. Every component's roots at least halve a round,
        so it ends in O(log n) rounds. The same labels as :func:`curata.lsh.connected_labels`.
        """
        ray = self._ray
        edges = np.asarray(pairs).reshape(-1, 2)  # as given (e.g. file-backed int32): no copy
        per_chunk = max(1, CHUNK_KEYS // 2)
        chunks = []
        for s in range(0, len(edges), per_chunk):
            chunk = np.ascontiguousarray(edges[s : s + per_chunk], dtype=np.int64)
            if chunk.min() < 0 or chunk.max() >= n:
                raise ConfigError(f"pairs index rows outside [0, {n})")
            chunks.append(ray.put(chunk))
        labels = np.arange(n, dtype=np.int64)
        propose = ray.remote(hook_proposals).options(num_cpus=1, max_retries=self.max_retries)
        while chunks:
            current = ray.put(labels)
            try:
                found = ray.get([propose.remote(chunk, current) for chunk in chunks])
            except ray.exceptions.RayError as exc:
                raise _step_failed("connected components", exc) from None
            if not any(len(high) for high, _ in found):
                break
            for high, low in found:
                np.minimum.at(labels, high, low)
            while True:
                jumped = labels[labels]
                if np.array_equal(jumped, labels):
                    break
                labels = jumped
        return labels

    def nearest_neighbours(
        self, vectors: np.ndarray | ColumnRows, k: int, metric: Metric = "cosine"
    ) -> Neighbours:
        """The ``k`` nearest other rows of every row (as :func:`curata.knn.nearest_neighbours`), by a
        scatter-gather over shards of the rows (read by tasks from the signal cache's files when
        they are there and every node reaches them).

        An actor per worker holds one shard of the rows in its own faiss index (built once: exact
        up to ``curata.knn.EXACT_MAX_ROWS`` rows in all, HNSW beyond, as the local engine); every
        block of ``KNN_QUERY_ROWS`` query rows goes once to the object store and is searched in
        every shard, and this process merges each row's candidates by (distance, row).
        """
        from curata import knn

        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        stored = self._stored(vectors)
        x: np.ndarray | None = None
        if stored is None:
            x = np.ascontiguousarray(
                vectors.to_array() if isinstance(vectors, ColumnRows) else vectors, dtype=np.float32
            )
        n = len(stored) if stored is not None else len(x)  # type: ignore[arg-type]
        shards = min(self.workers, n // 2)
        if shards < 2:
            x = stored.to_array() if stored is not None else x
            return knn.nearest_neighbours(np.ascontiguousarray(x, dtype=np.float32), k, metric)
        ray = self._ray
        exact = n <= knn.EXACT_MAX_ROWS
        want = min(k + 1, n)
        bounds = np.linspace(0, n, shards + 1).astype(np.int64)
        shard = ray.remote(knn.ShardIndex).options(
            num_cpus=1, max_restarts=self.max_retries, max_task_retries=self.max_retries
        )
        if stored is not None:
            # Tasks read each shard's and each query block's rows from the cache's files: the
            # vectors go from the files to the shards' workers, not through this process.
            read = ray.remote(read_file_rows).options(num_cpus=0, max_retries=self.max_retries)

            def rows_of(a: int, b: int) -> Any:
                pieces, rows = stored_slice(stored, a, b)
                return read.remote(pieces, stored.name, rows, np.float32)
        else:

            def rows_of(a: int, b: int) -> Any:
                return ray.put(x[a:b])  # type: ignore[index]

        actors = [shard.remote(rows_of(a, b), int(a), metric, exact) for a, b in itertools.pairwise(bounds)]
        dist = np.empty((n, want), dtype=np.float32)
        idx = np.empty((n, want), dtype=np.int64)
        starts = range(0, n, KNN_QUERY_ROWS)
        try:
            pending = deque(
                (lo, [a.search.remote(ref, want + knn.TIE_MARGIN) for a in actors])
                for lo, ref in ((lo, rows_of(lo, min(n, lo + KNN_QUERY_ROWS))) for lo in starts)
            )
            with progress_bar("nearest neighbours", len(starts)) as advance:
                while pending:
                    lo, refs = pending.popleft()
                    d, i = knn.merge_candidates(ray.get(refs), want)
                    dist[lo : lo + len(d)], idx[lo : lo + len(d)] = d, i
                    advance(1)
        except ray.exceptions.RayError as exc:
            raise _step_failed("the nearest-neighbour search", exc) from None
        finally:
            for actor in actors:
                ray.kill(actor)
        return knn.drop_self(dist, idx, k, exact)

    def group_representatives(
        self, keys: pa.ChunkedArray | ColumnRows, valid: np.ndarray, rank: np.ndarray
    ) -> np.ndarray:
        """Exact groups (as :func:`curata.engine.grouping.group_representatives`) by a hash shuffle.

        A map task per chunk of about ``CHUNK_KEYS`` rows makes the valid rows' (key, row, rank)
        entries and splits them by a hash of the key into one return per partition
        (``PARTITION_KEYS`` entries a partition, at least one per worker); a reduce task per
        partition returns (row, representative) of the keys held by two or more rows. Keys kept in
        the signal cache's files that every node reaches (a :class:`ColumnRows`) are read there by
        the map tasks, which get only their rows' valid flags and ranks from this process; other
        keys go to the object store from here. The driver holds only the result and those rows:
        every other valid row is its own group.
        """
        from curata.engine.grouping import count_true, key_batches, own_groups, valid_entries

        stored = self._stored(keys)
        column = key_column(keys)
        valid, rank = valid_entries(column, valid, rank)
        group = own_groups(valid)
        count = count_true(valid)
        if count < 2:
            return group
        ray = self._ray
        parts = max(self.workers, math.ceil(count / PARTITION_KEYS))
        reduce = ray.remote(repeated_key_representatives).options(num_cpus=1, max_retries=self.max_retries)
        # One return per partition (with one partition, Ray hands back the ref itself, not a list).
        if stored is not None:
            split_stored = ray_remote(self, split_stored_entries, returns=parts)
            mapped = [
                split_stored.remote(files, stored.name, first, valid[first:end], rank[first:end], parts)
                for files, first, end in file_runs(stored.files, CHUNK_KEYS)
            ]
        else:
            split = ray_remote(self, partition_entries, returns=parts)
            chunks = _gather_batches(key_batches(column, valid, rank, CHUNK_KEYS), CHUNK_KEYS)
            mapped = [split.remote(chunk, parts) for chunk in chunks]
        outputs = [_as_list(refs, parts) for refs in mapped]
        reduced = [reduce.remote(*(out[p] for out in outputs)) for p in range(parts)]
        try:
            for ref in reduced:
                rows, reps = ray.get(ref)
                group[rows] = reps
        except ray.exceptions.RayError as exc:
            raise _step_failed("exact-duplicate grouping", exc) from None
        return group


def ray_remote(engine: RayEngine, fn: Callable[..., Any], *, returns: int) -> Any:
    """``fn`` as a one-CPU Ray task of ``returns`` returns, retried as the engine says."""
    return engine._ray.remote(fn).options(num_cpus=1, num_returns=returns, max_retries=engine.max_retries)


def stored_slice(stored: ColumnRows, a: int, b: int) -> tuple[list[tuple[str, int]], np.ndarray]:
    """(files as (path, first row), rows) holding the selected rows ``a:b`` of ``stored``."""
    selected = stored.rows
    rows = np.arange(a, b, dtype=np.int64) if selected is None else np.asarray(selected[a:b], np.int64)
    return file_pieces(stored.files, rows), rows


def file_runs(files: Sequence[tuple[str, int]], rows: int) -> Iterator[tuple[list[str], int, int]]:
    """Runs of consecutive ``files`` ((path, rows) in order) of about ``rows`` rows each: (paths,
    first row, end row)."""
    paths: list[str] = []
    first = end = 0
    for path, count in files:
        paths.append(path)
        end += count
        if end - first >= rows:
            yield paths, first, end
            paths, first = [], end
    if paths:
        yield paths, first, end


def split_stored_entries(
    files: list[str], name: str, first: int, valid: np.ndarray, rank: np.ndarray, parts: int
) -> Any:
    """Map task of ``group_representatives`` over stored keys: the (key, row, rank) entries of the
    valid rows of column ``name`` of ``files`` (rows ``first`` on), split as :func:`partition_entries`."""
    from curata.engine.grouping import key_batches

    chunks = [chunk for path in files for chunk in outofcore.map_arrow_file(Path(path)).column(name).chunks]
    column = pa.chunked_array(chunks, type=chunks[0].type) if chunks else pa.chunked_array([], pa.binary(16))
    entries = key_batches(column, valid, rank, max(1, len(column))).read_all()
    at = entries.schema.get_field_index("row")
    entries = entries.set_column(at, "row", pa.array(np.asarray(entries.column(at)) + first, pa.int64()))
    return partition_entries(entries, parts)


def split_stored_keys(
    pieces: list[tuple[str, int]], name: str, rows: np.ndarray, offset: int, parts: int
) -> Any:
    """Map task of ``bucket_pairs`` over stored band keys: read ``rows`` of column ``name`` from
    the files ``pieces`` and split them as :func:`split_band_keys` (rows counted from ``offset``)."""
    return split_band_keys(read_file_rows(pieces, name, rows), offset, parts)


def sees_probe(path: str, token: str) -> bool:
    """Task of ``RayEngine.reaches``: the probe file at ``path`` holds ``token``, and a file can be
    written and removed beside it."""
    try:
        probe = Path(path)
        if probe.read_text() != token:
            return False
        mine = probe.with_name(f"{probe.name}-{os.getpid()}-{uuid.uuid4().hex}")
        mine.write_text(token)
        mine.unlink()
    except OSError:
        return False
    return True


def _gather_batches(reader: pa.RecordBatchReader, rows: int) -> Iterator[pa.Table]:
    """The reader's batches as tables of about ``rows`` rows (a table per small batch of the signal
    columns would make a task, and a return per partition, for every few rows)."""
    import pyarrow as pa

    held: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        held.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield pa.Table.from_batches(held, reader.schema)
            held, size = [], 0
    if held:
        yield pa.Table.from_batches(held, reader.schema)


def _key_hash(entries: pa.Table) -> np.ndarray:
    """A uint64 hash of each entry's key that every task computes alike (it picks the partition).

    Split 16-byte hashes and integers are mixed as numbers; other keys (text, blobs; anything
    else as its text) are hashed by their bytes.
    """
    import pyarrow as pa
    import xxhash

    k0 = entries.column("k0")
    if "k1" in entries.column_names:
        low = np.asarray(k0.to_numpy(), dtype=np.uint64)
        return _mix(low ^ _mix(np.asarray(entries.column("k1").to_numpy(), dtype=np.uint64)))
    if pa.types.is_integer(k0.type):
        return _mix(np.asarray(k0.to_numpy()).astype(np.uint64))
    binary_like = pa.types.is_binary(k0.type) or pa.types.is_large_binary(k0.type)
    binary_like |= pa.types.is_string(k0.type) or pa.types.is_large_string(k0.type)
    binary_like |= pa.types.is_fixed_size_binary(k0.type)
    values = k0.cast(pa.large_binary()) if binary_like else k0.cast(pa.string()).cast(pa.large_binary())
    return np.fromiter((xxhash.xxh3_64_intdigest(v) for v in values.to_pylist()), np.uint64, len(values))


def partition_entries(entries: pa.Table, parts: int) -> Any:
    """Ray task (map): (key..., row, rank) entries split by a hash of the key into ``parts`` tables.

    Returns the list of tables, one Ray return each (the single table when ``parts`` is 1).
    """
    import pyarrow as pa

    part = (_key_hash(entries) % np.uint64(parts)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    tables = [entries.take(pa.array(order[a:b])) for a, b in itertools.pairwise(bounds)]
    return task_returns(tables)


def repeated_key_representatives(*entries: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Ray task (reduce): (row, representative) for every key of a partition held by 2+ rows.

    ``entries`` are the partition's tables from every map task. Sorted by (key, rank, row), a
    key's rows are consecutive and its first is the row of lowest rank, the representative.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.concat_tables(entries)
    m = table.num_rows
    empty = np.zeros(0, np.int64)
    if m < 2:
        return empty, empty
    key_columns = [c for c in table.column_names if c not in ("row", "rank")]
    table = table.sort_by([(c, "ascending") for c in [*key_columns, "rank", "row"]])
    starts = np.zeros(m, dtype=bool)
    starts[0] = True
    for name in key_columns:
        col = table.column(name)
        differ = pc.not_equal(col.slice(1), col.slice(0, m - 1))
        starts[1:] |= np.asarray(differ.to_numpy(), dtype=bool)
    first = np.flatnonzero(starts)
    size = np.diff(np.append(first, m))
    row = np.asarray(table.column("row").to_numpy(), dtype=np.int64)
    repeated = np.repeat(size >= 2, size)
    return row[repeated], np.repeat(row[first], size)[repeated]


def hook_proposals(edges: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray task: for edges whose ends have different labels, (larger label, smallest label offered)."""
    a, b = labels[edges[:, 0]], labels[edges[:, 1]]
    differ = a != b
    high = np.maximum(a[differ], b[differ])
    low = np.minimum(a[differ], b[differ])
    if len(high) == 0:
        return high, low
    order = np.lexsort((low, high))
    high, low = high[order], low[order]
    first = np.r_[True, high[1:] != high[:-1]]
    return high[first], low[first]


def _mix(values: np.ndarray) -> np.ndarray:
    """A 64-bit mixing hash of uint64 values (partitions must not follow key order)."""
    h: np.ndarray = values * _MIX
    h ^= h >> np.uint64(31)
    h *= _MIX
    h ^= h >> np.uint64(29)
    return h


def _as_list(refs: Any, parts: int) -> list[Any]:
    """A task's refs as a list (with ``num_returns=1`` Ray hands back the ref itself)."""
    return list(refs) if parts > 1 else [refs]


def split_band_keys(chunk: np.ndarray, offset: int, parts: int) -> Any:
    """Ray task (map): a (rows, bands) chunk of band keys as (band, key, row) arrays per partition.

    The partition is a hash of (band, key), so every row of a bucket lands in the same one; within
    a partition the entries stay in row order. The narrowest types that hold the values: this is
    what the shuffle moves (one entry per band of a document), 10 bytes an entry for 32-bit keys
    and fewer than 2**31 rows.
    """
    rows, bands = chunk.shape
    band = np.tile(np.arange(bands, dtype=np.int16 if bands < 2**15 else np.int32), rows)
    key = chunk.reshape(-1)
    row = np.repeat(np.arange(offset, offset + rows, dtype=np.int64), bands)
    if offset + rows < 2**31:
        row = row.astype(np.int32)
    wide_band = band.astype(np.uint64) + np.uint64(1)
    part = (_mix(key.astype(np.uint64) ^ _mix(wide_band)) % np.uint64(parts)).astype(np.int32)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    out = [(band[o], key[o], row[o]) for o in (order[a:b] for a, b in itertools.pairwise(bounds))]
    return task_returns(out)


def _segments(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``arange(s, s + c)`` for every (s, c), concatenated, without a Python loop."""
    if counts.size == 0:
        return np.zeros(0, dtype=np.int64)
    before = np.cumsum(counts) - counts
    out: np.ndarray = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - before, counts)
    return out


def bucket_pair_codes(max_bucket: int, n: int, ranges: int, *pieces: tuple[np.ndarray, ...]) -> Any:
    """Ray task (reduce): the pairs of every (band, key) bucket in one partition, as sorted codes
    split into ``ranges`` ranges of the pair's first row.

    ``pieces`` are the partition's (band, key, row) arrays from every map task, in row order. A
    bucket of up to ``max_bucket`` rows gives all its pairs; a larger one its lowest row paired
    with every other row (star) plus each row with the next one (chain), as ``candidate_pairs``.
    A pair (i, j), i < j, is coded ``i * n + j``.
    """
    band = np.concatenate([p[0] for p in pieces])
    key = np.concatenate([p[1] for p in pieces])
    row = np.concatenate([p[2] for p in pieces]).astype(np.int64)
    # Pieces arrive in row order, so a stable sort by bucket keeps each bucket's rows ascending.
    order = np.lexsort((key, band))
    band, key, row = band[order], key[order], row[order]
    del order
    m = len(row)
    starts_mask = np.ones(m, dtype=bool)
    starts_mask[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    del band, key
    start = np.flatnonzero(starts_mask).astype(np.int64)
    size = np.diff(np.append(start, m)).astype(np.int64)
    left: list[np.ndarray] = [np.zeros(0, np.int64)]
    right: list[np.ndarray] = [np.zeros(0, np.int64)]
    small = (size >= 2) & (size <= max_bucket)
    if small.any():
        pos = _segments(start[small], size[small])
        after = np.repeat(start[small] + size[small], size[small]) - 1 - pos
        first = np.repeat(pos, after)
        second = first + 1 + _segments(np.zeros(after.size, np.int64), after)
        left.append(row[first])
        right.append(row[second])
    big = size > max_bucket
    if big.any():
        members = _segments(start[big] + 1, size[big] - 1)
        hub = np.repeat(start[big], size[big] - 1)
        left.append(row[hub])
        right.append(row[members])
        chained = members[members - 1 != hub]
        left.append(row[chained - 1])
        right.append(row[chained])
    code = np.unique(np.concatenate(left) * np.int64(n) + np.concatenate(right))
    cuts = -(-np.arange(ranges + 1, dtype=np.int64) * n // ranges) * np.int64(n)
    bounds = np.searchsorted(code, cuts)
    out = [code[a:b] for a, b in itertools.pairwise(bounds)]
    return task_returns(out)


def merge_codes(*pieces: np.ndarray) -> np.ndarray:
    """Ray task: the distinct pair codes of one range (a pair found in several bands meets itself)."""
    return np.unique(np.concatenate([np.zeros(0, np.int64), *pieces]))
