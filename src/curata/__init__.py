"""curata: audit, curate and document the datasets deep-learning models are trained on."""

from __future__ import annotations

__version__ = "0.1.0"

from curata.audit import AuditResult, AuditSettings, audit
from curata.curate import CurateResult, Plan, Policy, curate, default_policy, load_policy
from curata.dataset import Dataset, Roles
from curata.errors import ConfigError, CurataError, InputError, MissingDependencyError, WorkspaceError
from curata.io import read_dataset
from curata.versions import (
    ExportResult,
    VerifyResult,
    VersionDiff,
    Workspace,
    diff_versions,
    export_version,
    verify_workspace,
)

__all__ = [
    "AuditResult",
    "AuditSettings",
    "ConfigError",
    "CurataError",
    "CurateResult",
    "Dataset",
    "ExportResult",
    "InputError",
    "MissingDependencyError",
    "Plan",
    "Policy",
    "Roles",
    "VerifyResult",
    "VersionDiff",
    "Workspace",
    "WorkspaceError",
    "__version__",
    "audit",
    "curate",
    "default_policy",
    "diff_versions",
    "export_version",
    "load_policy",
    "read_dataset",
    "verify_workspace",
]
