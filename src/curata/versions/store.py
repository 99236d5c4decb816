"""The workspace (``.curata/``): versions, the audit log, the lock, and atomic publication.

Layout::

    .curata/
      workspace.json          marker (format, created_at)
      log.jsonl, log.head     the hash-chained audit log (see auditlog.py)
      lock                    present while a command writes (pid, host, time, command)
      tmp/                    staging folders; a version is built here and renamed into place
      versions/v1/ ...        one folder per version (see manifest.py for its files)
      signals/                the audit's signal cache (shared with `curata audit`)

Every write that changes the workspace holds the lock; a version appears by one ``rename`` of a
complete folder, so a crash leaves either no version or a whole one (and at most a staging folder,
removed by the next writer).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curata.errors import WorkspaceError
from curata.versions.auditlog import AuditLog, utc_now
from curata.versions.files import remove_tree, write_json_atomic

DEFAULT_WORKSPACE = ".curata"
MARKER = "workspace.json"
VERSION_FILE = "version.json"
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
_LOGGED_VERSION_RE = re.compile(r"^versions/(v[1-9][0-9]*)/version\.json$")


def version_number(vid: str) -> int:
    """The number of a version id (``v12`` -> 12); raises for anything else."""
    m = _VERSION_RE.match(vid)
    if m is None:
        raise WorkspaceError(f"'{vid}' is not a version id: versions are named v1, v2, ...")
    return int(m.group(1))


@dataclass(frozen=True)
class Version:
    """One stored version: its folder and the content of its ``version.json``."""

    id: str
    path: Path
    meta: dict[str, Any]

    @property
    def parent(self) -> str | None:
        """The version this one followed (None for the first)."""
        parent = self.meta.get("parent")
        return str(parent) if parent else None

    def _read(self, name: str) -> pa.Table:
        path = self.path / name
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise WorkspaceError(f"{self.id}: cannot read {name} ({exc}); run `curata verify`") from None

    def manifest(self) -> pa.Table:
        """``manifest.parquet``: one row per record of the version."""
        return self._read("manifest.parquet")

    def plan(self) -> pa.Table:
        """``plan.parquet``: the actions that made the version."""
        return self._read("plan.parquet")

    def changes(self) -> pa.Table | None:
        """``changes/records.parquet`` (changed content keyed by record_id), or None without changes."""
        if not (self.path / "changes" / "records.parquet").exists():
            return None
        return self._read("changes/records.parquet")


class Workspace:
    """A curata workspace folder (default ``.curata`` in the current folder)."""

    def __init__(self, root: str | Path = DEFAULT_WORKSPACE) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.tmp_dir = self.root / "tmp"
        self.lock_path = self.root / "lock"

    @cached_property
    def log(self) -> AuditLog:
        """The workspace's audit log."""
        return AuditLog(self.root)

    @property
    def exists(self) -> bool:
        """Whether the folder is an initialised workspace (has its marker)."""
        return (self.root / MARKER).is_file()

    def require(self) -> None:
        """Raise a one-line error unless the workspace is initialised."""
        if not self.exists:
            raise WorkspaceError(
                f"no curata workspace at {self.root}: run `curata init` (or pass --workspace)"
            )

    def init(self, command: str = "init") -> bool:
        """Create the workspace (idempotent); returns True when it was created now."""
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"{self.root} is a file: a workspace is a folder")
        if self.exists:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock(command):
            if self.exists:
                return False
            self.versions_dir.mkdir(exist_ok=True)
            write_json_atomic(
                self.root / MARKER, {"format": "curata-workspace", "version": 1, "created_at": utc_now()}
            )
            self.log.append(command)
        return True

    # ------------------------------------------------------------ versions

    def version_ids(self) -> list[str]:
        """Ids of the stored versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = [p.name for p in self.versions_dir.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(found, key=version_number)

    def latest(self) -> str | None:
        """The newest version id, or None before the first."""
        ids = self.version_ids()
        return ids[-1] if ids else None

    def version(self, vid: str) -> Version:
        """Read one version's ``version.json``; a one-line error names the versions there are."""
        self.require()
        version_number(vid)
        path = self.versions_dir / vid
        if not path.is_dir():
            have = ", ".join(self.version_ids()) or "none yet (run `curata curate`)"
            raise WorkspaceError(f"no version '{vid}' in {self.root}; versions: {have}")
        try:
            meta = json.loads((path / VERSION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WorkspaceError(f"{vid}: cannot read {VERSION_FILE} ({exc}); run `curata verify`") from None
        if not isinstance(meta, dict):
            raise WorkspaceError(f"{vid}: {VERSION_FILE} is not an object; run `curata verify`")
        return Version(vid, path, meta)

    def logged_version_ids(self) -> dict[str, int]:
        """Versions the audit log records, with the seq of their entry."""
        out: dict[str, int] = {}
        for entry in self.log.entries():
            for name in entry.get("outputs") or {}:
                m = _LOGGED_VERSION_RE.match(str(name))
                if m:
                    out[m.group(1)] = int(entry.get("seq", 0))
        return out

    def next_version_id(self) -> str:
        """The id the next version gets: one more than any stored or logged (ids are never reused)."""
        numbers = [version_number(v) for v in self.version_ids()]
        numbers += [version_number(v) for v in self.logged_version_ids()]
        return f"v{max(numbers, default=0) + 1}"

    # ------------------------------------------------------------ writing

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder under ``tmp/`` for building output; removed afterwards unless moved away."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = self.tmp_dir / uuid.uuid4().hex
        path.mkdir()
        try:
            yield path
        finally:
            remove_tree(path)

    def publish(self, staged: Path, vid: str) -> Path:
        """Move a complete staged version folder into ``versions/<vid>`` (one rename)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        target = self.versions_dir / vid
        if target.exists():
            raise WorkspaceError(f"version {vid} already exists in {self.root}; nothing was written")
        os.rename(staged, target)
        return target

    @contextmanager
    def lock(self, command: str, on_warning: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold ``.curata/lock`` (created with O_EXCL) while the block runs.

        A lock left by a dead process on this host is taken over with a warning; any other lock
        raises WorkspaceError naming its holder. Staging folders of crashed runs are removed once
        the lock is held (nobody else can be writing then).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "time": utc_now(), "command": command}
        data = json.dumps(mine, sort_keys=True).encode("utf-8")
        for attempt in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder()
                if attempt == 0 and holder is not None and _is_stale(holder):
                    if on_warning is not None:
                        on_warning(
                            f"taking over a stale lock of {self.root} left by pid {holder.get('pid')} "
                            f"({holder.get('command')!r}, {holder.get('time')}), which is no longer running"
                        )
                    self._remove_stale(holder)
                    continue
                raise WorkspaceError(self._locked_message(holder)) from None
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            break
        try:
            if self.tmp_dir.is_dir():
                for leftover in self.tmp_dir.iterdir():
                    remove_tree(leftover)
            yield
        finally:
            holder = self._lock_holder()
            if holder is not None and holder.get("pid") == mine["pid"] and holder.get("time") == mine["time"]:
                self.lock_path.unlink(missing_ok=True)

    def _lock_holder(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.lock_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _remove_stale(self, holder: dict[str, Any]) -> None:
        # Rename first, then check it was the stale lock we judged: a lock taken meanwhile by
        # another process is put back instead of deleted.
        aside = self.lock_path.with_name(f"lock.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.lock_path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            moved = None
        if moved != holder:
            with suppress(FileExistsError):
                os.link(aside, self.lock_path)
        aside.unlink(missing_ok=True)

    def _locked_message(self, holder: dict[str, Any] | None) -> str:
        if holder is None:
            who = "a process whose lock file cannot be read"
        else:
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('time')} "
                f"({holder.get('command')!r})"
            )
        return (
            f"workspace {self.root} is locked by {who}: another curata command is writing to it; "
            f"wait for it to finish, or delete {self.lock_path} if that process is gone"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def _is_stale(holder: dict[str, Any]) -> bool:
    """A lock is stale when its holder ran on this host and its pid is gone."""
    pid = holder.get("pid")
    return (
        holder.get("host") == socket.gethostname()
        and isinstance(pid, int)
        and pid > 0
        and not _pid_alive(pid)
    )
