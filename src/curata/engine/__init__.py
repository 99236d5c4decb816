"""Engines run per-record work as batches; checks never know which engine ran."""

from __future__ import annotations

from curata.engine.base import Engine
from curata.engine.local import LocalEngine
from curata.errors import ConfigError


def get_engine(name: str = "local", workers: int | None = None) -> Engine:
    """Return the engine called ``name`` (only ``local`` for now)."""
    if name == "local":
        return LocalEngine(workers=workers)
    raise ConfigError(f"unknown engine '{name}': expected 'local' (the Ray engine comes later)")


__all__ = ["Engine", "LocalEngine", "get_engine"]
