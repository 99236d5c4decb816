"""Progress bars for long steps (rich), silent when disabled or not on a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_ENABLED = {"on": True}


def set_progress(enabled: bool) -> None:
    """Turn progress bars on or off for this process."""
    _ENABLED["on"] = enabled


def progress_enabled() -> bool:
    """Whether progress bars are shown (on, and stderr is a terminal or CURATA_PROGRESS=1)."""
    if not _ENABLED["on"]:
        return False
    return sys.stderr.isatty() or os.environ.get("CURATA_PROGRESS") == "1"


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n, note=None)``: moves a rich progress bar on stderr by ``n`` and, with a
    ``note``, prints that line above the bar (e.g. a training loss)."""
    if not description or not progress_enabled():
        yield lambda n, note=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int, note: str | None = None) -> None:
            if note is not None:
                progress.console.print(note)
            progress.advance(task, n)

        yield advance
