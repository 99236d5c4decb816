"""The embedded engine: a local process pool with a bounded number of batches in flight.

Its cross-record steps run in this process: in numpy up to a size, in DuckDB (spilling to disk)
beyond it, as :mod:`curata.outofcore` sets.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from curata.engine.base import ColumnRows, key_column
from curata.errors import ConfigError
from curata.progress import progress_bar

if TYPE_CHECKING:
    import pyarrow as pa

    from curata.knn import Metric, Neighbours

R = TypeVar("R")


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def die_with_parent(parent: int) -> None:
    """Pool worker set-up: end this worker when the process that started it ends.

    A pool's workers wait on a queue whose other ends their siblings also hold, so they do not
    see their parent die: an audit killed from outside (out of memory, ``kill -9``) would leave
    them waiting for ever, each holding its memory. On Linux the kernel sends them SIGKILL when
    the parent ends (``PR_SET_PDEATHSIG``); elsewhere this does nothing. The kernel's "parent" is
    the thread that started the worker: the one consuming ``map_batches``, which the pool does not
    outlive.
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != parent:  # the parent ended before the request was in place
        os._exit(1)


class LocalEngine:
    """Streams batches through ``workers`` processes; at most ``2 * workers`` batches in flight.

    With one worker the functions run in this process (no pickling, easiest to debug). Memory is
    bounded by the batch size times the number in flight, not by the dataset size.
    """

    name = "local"
    distributed = False

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers or default_workers()

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
        with progress_bar(description, total) as advance:
            if self.workers == 1:
                for batch in batches:
                    yield fn(batch, *args)
                    advance(1)
                return
            max_in_flight = 2 * self.workers
            pending: deque[Future[R]] = deque()
            with ProcessPoolExecutor(
                max_workers=self.workers, initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                for batch in batches:
                    pending.append(pool.submit(fn, batch, *args))
                    if len(pending) >= max_in_flight:
                        yield pending.popleft().result()
                        advance(1)
                while pending:
                    yield pending.popleft().result()
                    advance(1)

    def bucket_pairs(self, band_keys: np.ndarray | ColumnRows, max_bucket: int | None = None) -> np.ndarray:
        """Rows sharing a band key: :func:`curata.lsh.candidate_pairs`, in this process."""
        from curata.lsh import DEFAULT_MAX_BUCKET, candidate_pairs

        keys = band_keys.to_array() if isinstance(band_keys, ColumnRows) else band_keys
        return candidate_pairs(keys, DEFAULT_MAX_BUCKET if max_bucket is None else max_bucket)

    def connected_components(self, n: int, pairs: np.ndarray) -> np.ndarray:
        """Components as :func:`curata.lsh.connected_labels` (a union-find in this process)."""
        from curata.lsh import connected_labels

        return connected_labels(n, pairs)

    def nearest_neighbours(
        self, vectors: np.ndarray | ColumnRows, k: int, metric: Metric = "cosine"
    ) -> Neighbours:
        """:func:`curata.knn.nearest_neighbours`, in this process (faiss uses its threads)."""
        from curata.knn import nearest_neighbours

        x = vectors.to_array() if isinstance(vectors, ColumnRows) else vectors
        return nearest_neighbours(x, k, metric)

    def group_representatives(
        self, keys: pa.ChunkedArray | ColumnRows, valid: np.ndarray, rank: np.ndarray
    ) -> np.ndarray:
        """Exact groups as :func:`curata.engine.grouping.group_representatives`, in this process."""
        from curata.engine.grouping import group_representatives

        return group_representatives(key_column(keys), valid, rank)
