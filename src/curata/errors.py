"""One error tree for curata; each error also subclasses the matching built-in."""

from __future__ import annotations


class CurataError(Exception):
    """Base class of every error curata raises on purpose."""


class InputError(CurataError, ValueError):
    """The data a user pointed curata at cannot be read as asked (file, row or column named)."""


class ConfigError(CurataError, ValueError):
    """A setting or option has a value curata cannot use."""


class MissingDependencyError(CurataError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'curata[{extra}]'")
        self.package = package
        self.extra = extra


class CheckFailedError(CurataError, RuntimeError):
    """A check raised while running (only re-raised with --strict)."""


class WorkspaceError(CurataError, RuntimeError):
    """The curata workspace (``.curata/``) is locked, missing something asked for, or damaged."""


class EngineError(CurataError, RuntimeError):
    """The engine lost work it could not redo (e.g. a worker died more often than retries allow)."""
