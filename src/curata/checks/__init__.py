"""Checks: each family in its own module, all registered in ``curata.checks.base``."""

from curata.checks import contamination, duplicates, embedding, integrity, labels, licence, quality, semantic
from curata.checks import pii as pii  # registers the personal-data check
from curata.checks.base import Check, Context, registered_checks

__all__ = [
    "Check",
    "Context",
    "contamination",
    "duplicates",
    "embedding",
    "integrity",
    "labels",
    "licence",
    "quality",
    "registered_checks",
    "semantic",
]
