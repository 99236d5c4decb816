"""The engine interface: map a picklable function over batches, in order, with progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Engine(Protocol):
    """Runs ``fn(batch, *args)`` for each batch and yields results in input order."""

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
