"""Versions of a curated dataset: manifests, the workspace store, the audit log, diff, export, verify."""

from curata.versions.diff import VersionDiff, diff_versions
from curata.versions.export import ExportResult, export_version
from curata.versions.store import Version, Workspace
from curata.versions.verify import Problem, VerifyResult, verify_workspace

__all__ = [
    "ExportResult",
    "Problem",
    "VerifyResult",
    "Version",
    "VersionDiff",
    "Workspace",
    "diff_versions",
    "export_version",
    "verify_workspace",
]
