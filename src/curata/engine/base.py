"""The engine interface: map a picklable function over batches, in order, with progress.

Engines also run the cross-record steps that a cluster can share out (``bucket_pairs``: the LSH
band buckets), so checks call the engine and never know which one ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


class Engine(Protocol):
    """Runs ``fn(batch, *args)`` for each batch and yields results in input order.

    ``args`` are the same for every batch. An argument that holds heavy lazily loaded state (an
    encoder, whose model loads on first use) may be kept by an engine once per worker instead of
    being shipped with every batch; the results must not depend on that.
    """

    name: str
    workers: int

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

    def bucket_pairs(self, band_keys: np.ndarray, max_bucket: int | None = None) -> np.ndarray:
        """The (m, 2) int64 row pairs ``i < j`` sharing a key in some band column, unique and sorted.

        Same result as :func:`curata.lsh.candidate_pairs`: buckets of more than ``max_bucket`` rows
        emit a star from their lowest row plus a chain over consecutive rows instead of every pair
        (None: ``curata.lsh.DEFAULT_MAX_BUCKET``).
        """
        ...
