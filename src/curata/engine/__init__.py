"""Engines run per-record work as batches; checks never know which engine ran."""

from __future__ import annotations

from curata.engine.base import ColumnRows, Engine
from curata.engine.local import LocalEngine
from curata.engine.ray import RayEngine
from curata.errors import ConfigError, EngineError

#: Engine names ``get_engine`` knows.
ENGINES = ("local", "ray")


def get_engine(name: str = "local", workers: int | None = None, *, address: str | None = None) -> Engine:
    """Return the engine called ``name``: ``local`` (this machine) or ``ray`` (a Ray cluster).

    ``address`` is the Ray cluster's (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``; None starts
    Ray in this process); the local engine takes none. Ray itself is imported only by the Ray
    engine, which names the extra to install when it is missing.
    """
    if name == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --engine ray")
        return LocalEngine(workers=workers)
    if name == "ray":
        return RayEngine(address=address, workers=workers)
    raise ConfigError(f"unknown engine '{name}': expected {' or '.join(ENGINES)}")


__all__ = ["ENGINES", "ColumnRows", "Engine", "EngineError", "LocalEngine", "RayEngine", "get_engine"]
