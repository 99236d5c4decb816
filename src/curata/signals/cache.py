"""Signal cache: per-record signals stored in the workspace, keyed by content hash and fingerprint."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curata import outofcore


class SignalCache:
    """Arrow files under ``workspace/signals/<fingerprint>/``, one row per content hash.

    A signal fingerprint names the algorithm, its version and its settings, so changing any of
    them starts a fresh cache instead of reusing stale values. Parts are uncompressed Arrow IPC
    files, read memory-mapped (:func:`curata.outofcore.map_arrow_file`): loading the cache reads
    nothing into memory, and a pass over it holds only the pages it works on.
    """

    def __init__(self, workspace: Path) -> None:
        self.root = Path(workspace) / "signals"

    def folder(self, fingerprint: str) -> Path:
        """The folder holding ``fingerprint``'s parts (it may not exist yet)."""
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        return self.root / digest

    def load(self, fingerprint: str) -> pa.Table | None:
        """Return every cached row for ``fingerprint`` (with its ``content_hash``), or None."""
        return self.load_parts(fingerprint)[0]

    def load_parts(self, fingerprint: str) -> tuple[pa.Table | None, tuple[tuple[str, int], ...]]:
        """Every cached row for ``fingerprint`` (or None), and the (path, rows) of the parts that
        hold them, in the table's order."""
        folder = self.folder(fingerprint)
        if not folder.is_dir():
            return None, ()
        paths = sorted(folder.glob("part-*.arrow"))
        tables = [outofcore.map_arrow_file(p) for p in paths]
        if not tables:
            return None, ()
        files = tuple((str(p), t.num_rows) for p, t in zip(paths, tables, strict=True))
        return pa.concat_tables(tables, promote_options="default"), files

    def lookup(self, fingerprint: str, content_hashes: pa.Array) -> tuple[pa.Table | None, pa.Array]:
        """Return (cached rows aligned with ``content_hashes`` or None, int index into them or null)."""
        cached = self.load(fingerprint)
        if cached is None:
            return None, pa.nulls(len(content_hashes), pa.int32())
        index = pc.index_in(content_hashes, value_set=cached.column("content_hash"))
        return cached, index

    def store(self, fingerprint: str, table: pa.Table) -> Path | None:
        """Append newly computed rows (must hold ``content_hash``) as a new part; returns its path
        (None when ``table`` is empty)."""
        if table.num_rows == 0:
            return None
        return write_part(self.folder(fingerprint), fingerprint, table)

    def temp_folder(self) -> Path:
        """Where the signal steps put their temporary files (inside the workspace)."""
        return self.root / "tmp"


def write_part(folder: Path, fingerprint: str, table: pa.Table) -> Path:
    """Write ``table`` (signal columns, then ``content_hash``) as a new part of the cache folder
    ``folder`` of ``fingerprint``; returns its path.

    Workers of a distributed engine call it too, when they share the workspace with this process:
    the part is written under a temporary name and renamed, so a worker lost mid-write leaves no
    half part, and parts from a retried task only repeat rows (the same content, the same signals).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "FINGERPRINT"
    if not marker.exists():
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        tmp.write_text(fingerprint + "\n")
        os.replace(tmp, marker)
    path = folder / f"part-{uuid.uuid4().hex}.arrow"
    outofcore.write_arrow_file(path, [table], table.schema)
    return path
