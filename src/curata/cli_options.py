"""Command-line options shared by ``curata audit`` and ``curata curate`` (one definition each)."""

from __future__ import annotations

from typing import Annotated

import typer

EngineOption = Annotated[
    str, typer.Option(help="Execution engine: local (this machine) or ray (a Ray cluster).")
]
WorkersOption = Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="Ray cluster for --engine ray: auto, HOST:PORT or ray://HOST:PORT "
        "(default: start Ray in this process)."
    ),
]
