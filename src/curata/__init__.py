"""curata: audit, curate and document the datasets deep-learning models are trained on."""

from __future__ import annotations

__version__ = "0.1.0"

from curata.audit import AuditResult, AuditSettings, audit
from curata.dataset import Dataset, Roles
from curata.errors import ConfigError, CurataError, InputError, MissingDependencyError
from curata.io import read_dataset

__all__ = [
    "AuditResult",
    "AuditSettings",
    "ConfigError",
    "CurataError",
    "Dataset",
    "InputError",
    "MissingDependencyError",
    "Roles",
    "__version__",
    "audit",
    "read_dataset",
]
