"""``verify``: is the audit log intact, and does every stored version still match what was recorded?

Checked: the log's hash chain and head (see auditlog.py); for each version, every file against the
digests in its ``version.json`` (edited, missing or extra files), ``version.json`` itself against the
digest its log entry recorded, versions the log records but the workspace lacks, and versions with
no log entry. With ``sources=True`` each version's records are also re-read from its source and
their content hashes compared with the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from curata.errors import CurataError
from curata.versions.files import sha256_file, tree_digests
from curata.versions.store import VERSION_FILE, Workspace


@dataclass(frozen=True)
class Problem:
    """One integrity problem: what it concerns (``log``, a version id) and a one-line message."""

    subject: str
    message: str


@dataclass(frozen=True)
class VerifyResult:
    """Everything ``verify`` found; ``ok`` when nothing."""

    problems: tuple[Problem, ...]
    entries: int
    versions: tuple[str, ...]
    checked_sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether the log and every version are intact."""
        return not self.problems


def verify_workspace(
    workspace: str | Workspace = ".curata",
    *,
    sources: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> VerifyResult:
    """Check the workspace's audit log and stored versions; returns every problem, naming each."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.require()
    step = on_step or (lambda _: None)
    problems: list[Problem] = []
    step("checking the audit log")
    for p in ws.log.verify():
        problems.append(Problem("log", p.message))
    entries = ws.log.entries()
    recorded: dict[str, tuple[int, str]] = {}
    for entry in entries:
        for name, digest in (entry.get("outputs") or {}).items():
            parts = str(name).split("/")
            if len(parts) == 3 and parts[0] == "versions" and parts[2] == VERSION_FILE:
                recorded[parts[1]] = (int(entry.get("seq", 0)), str(digest))
    versions = ws.version_ids()
    for vid in versions:
        step(f"checking {vid}")
        problems.extend(_verify_version(ws, vid, recorded.get(vid)))
    for vid, (seq, _) in sorted(recorded.items()):
        if vid not in versions:
            problems.append(
                Problem(vid, f"{vid} is recorded in log entry {seq} but missing from the workspace (deleted)")
            )
    checked: list[str] = []
    if sources:
        for vid in versions:
            step(f"re-reading the source of {vid}")
            problems.extend(_verify_source(ws, vid))
            checked.append(vid)
    return VerifyResult(tuple(problems), len(entries), tuple(versions), tuple(checked))


def _verify_version(ws: Workspace, vid: str, recorded: tuple[int, str] | None) -> list[Problem]:
    path = ws.versions_dir / vid
    meta_path = path / VERSION_FILE
    out: list[Problem] = []
    if not meta_path.is_file():
        return [Problem(vid, f"{vid}/{VERSION_FILE} is missing (deleted)")]
    if recorded is None:
        out.append(Problem(vid, f"{vid} has no audit-log entry (made or copied outside curata)"))
    elif sha256_file(meta_path) != recorded[1]:
        out.append(
            Problem(
                vid,
                f"{vid}/{VERSION_FILE} was edited: it does not match the digest in log entry {recorded[0]}",
            )
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError):
        out.append(Problem(vid, f"{vid}/{VERSION_FILE} is not readable as a version record (edited)"))
        return out
    actual = tree_digests(path, skip=(VERSION_FILE,))
    for name in sorted(files):
        if name not in actual:
            out.append(Problem(vid, f"{vid}/{name} is missing (deleted)"))
        elif actual[name] != files[name]:
            out.append(Problem(vid, f"{vid}/{name} was edited: its content does not match {VERSION_FILE}"))
    for name in sorted(set(actual) - set(files)):
        out.append(Problem(vid, f"{vid}/{name} is not part of the version (added afterwards)"))
    return out


def _verify_source(ws: Workspace, vid: str) -> list[Problem]:
    from curata.versions.export import materialise, source_dataset

    try:
        version = ws.version(vid)
        materialise(version, source_dataset(version), version.manifest(), None)
    except CurataError as exc:
        return [Problem(vid, str(exc))]
    return []
