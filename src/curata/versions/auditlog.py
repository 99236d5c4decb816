"""The audit log: ``.curata/log.jsonl``, append-only, each entry hash-chained to the one before.

Entry: ``{seq, time, user, command, inputs{name: sha256}, outputs{name: sha256}, prev, hash}``.
``hash`` is the SHA-256 of the canonical JSON of the entry without ``hash``; ``prev`` is the hash of
the entry before (64 zeros for the first). ``log.head`` holds the seq and hash of the last entry, so
deleting entries at the end is caught too. Appends happen under the workspace lock.

The chain shows edits, reorders and deletions made without rewriting every later entry and the
head; someone able to rewrite all of them can forge a consistent log (keep a copy of the head
elsewhere, e.g. in the commit of the data project, to anchor it).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curata.errors import WorkspaceError
from curata.versions.files import canonical_json, sha256_bytes, write_json_atomic

GENESIS = "0" * 64
ENTRY_KEYS = ("seq", "time", "user", "command", "inputs", "outputs", "prev", "hash")


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of ``entry`` without its ``hash`` field."""
    return sha256_bytes(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


def current_user() -> str:
    """``user@host`` of this process (``unknown`` where the OS cannot say)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = os.environ.get("USER") or "unknown"
    return f"{user}@{socket.gethostname()}"


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LogProblem:
    """One thing wrong with the log: the entry it concerns (seq, or None) and what."""

    seq: int | None
    line: int | None
    message: str


class AuditLog:
    """The hash-chained log of one workspace (``log.jsonl`` + ``log.head``)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / "log.jsonl"
        self.head_path = Path(root) / "log.head"

    def read_head(self) -> dict[str, Any] | None:
        """The head pointer ``{seq, hash}``, or None before the first entry."""
        if not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WorkspaceError(f"{self.head_path}: unreadable ({exc}); run `curata verify`") from None
        if not isinstance(head, dict):
            raise WorkspaceError(f"{self.head_path}: not a head record; run `curata verify`")
        return head

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, in file order (lines that are not JSON objects are skipped; verify names them)."""
        out: list[dict[str, Any]] = []
        if not self.path.exists():
            return out
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def append(
        self,
        command: str,
        inputs: dict[str, str] | None = None,
        outputs: dict[str, str] | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry chained to the head; the caller holds the workspace lock.

        Refuses to extend a log whose last entry does not match the head (it was changed outside
        curata): appending would hide the break behind a valid-looking new entry.
        """
        head = self.read_head()
        entries = self.entries()
        last = entries[-1] if entries else None
        if head is None:
            broken = last is not None
        else:
            broken = (
                last is None or last.get("hash") != head.get("hash") or last.get("seq") != head.get("seq")
            )
        if broken:
            raise WorkspaceError(
                f"{self.path}: the audit log does not end at its head (edited outside curata); "
                "run `curata verify` to see where, nothing was written"
            )
        seq = 1 if last is None else int(last["seq"]) + 1
        entry: dict[str, Any] = {
            "seq": seq,
            "time": utc_now(),
            "user": user or current_user(),
            "command": command,
            "inputs": dict(sorted((inputs or {}).items())),
            "outputs": dict(sorted((outputs or {}).items())),
            "prev": GENESIS if last is None else str(last["hash"]),
        }
        entry["hash"] = entry_hash(entry)
        line = canonical_json(entry) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        write_json_atomic(self.head_path, {"seq": seq, "hash": entry["hash"]})
        return entry

    def verify(self) -> list[LogProblem]:
        """Every break in the chain: edited entries, reordered or deleted ones, a head mismatch."""
        problems: list[LogProblem] = []
        if not self.path.exists():
            if self.head_path.exists():
                problems.append(
                    LogProblem(None, None, f"{self.path.name} is missing but its head exists (deleted)")
                )
            return problems
        prev_hash, prev_seq = GENESIS, 0
        last: dict[str, Any] | None = None
        for line_no, raw in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not raw.strip():
                problems.append(LogProblem(None, line_no, f"line {line_no} is blank (edited)"))
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                problems.append(LogProblem(None, line_no, f"line {line_no} is not valid JSON (edited)"))
                continue
            if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS):
                problems.append(LogProblem(None, line_no, f"line {line_no} is not a log entry (edited)"))
                continue
            seq = entry.get("seq")
            where = f"entry {seq} (line {line_no}, {entry.get('command')!r})"
            if entry_hash(entry) != entry.get("hash"):
                problems.append(
                    LogProblem(seq, line_no, f"{where} was edited: its content does not match its hash")
                )
            if seq != prev_seq + 1:
                problems.append(
                    LogProblem(
                        seq,
                        line_no,
                        f"{where} follows entry {prev_seq}: entries were deleted or reordered",
                    )
                )
            elif entry.get("prev") != prev_hash:
                problems.append(
                    LogProblem(
                        seq, line_no, f"{where} does not chain to entry {prev_seq} (its prev hash differs)"
                    )
                )
            prev_hash = str(entry.get("hash"))
            prev_seq = seq if isinstance(seq, int) else prev_seq + 1
            last = entry
        try:
            head = self.read_head()
        except WorkspaceError as exc:
            problems.append(LogProblem(None, None, str(exc)))
            return problems
        if head is None:
            if last is not None:
                problems.append(LogProblem(None, None, f"{self.head_path.name} is missing (deleted)"))
        elif last is None:
            problems.append(
                LogProblem(None, None, f"the log is empty but its head says entry {head.get('seq')}")
            )
        elif head.get("seq") != last.get("seq") or head.get("hash") != last.get("hash"):
            problems.append(
                LogProblem(
                    last.get("seq"),
                    None,
                    f"the log ends at entry {last.get('seq')} but its head records entry {head.get('seq')}: "
                    "entries at the end were deleted, or the last one was edited",
                )
            )
        return problems
