"""Signal cache: per-record signals stored in the workspace, keyed by content hash and fingerprint."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class SignalCache:
    """Parquet parts under ``workspace/signals/<fingerprint>/``, one row per content hash.

    A signal fingerprint names the algorithm, its version and its settings, so changing any of
    them starts a fresh cache instead of reusing stale values.
    """

    def __init__(self, workspace: Path) -> None:
        self.root = Path(workspace) / "signals"

    def _folder(self, fingerprint: str) -> Path:
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        return self.root / digest

    def load(self, fingerprint: str) -> pa.Table | None:
        """Return every cached row for ``fingerprint`` (column ``content_hash`` first), or None."""
        folder = self._folder(fingerprint)
        parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        if not parts:
            return None
        return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")

    def lookup(self, fingerprint: str, content_hashes: pa.Array) -> tuple[pa.Table | None, pa.Array]:
        """Return (cached rows aligned with ``content_hashes`` or None, int index into them or null)."""
        cached = self.load(fingerprint)
        if cached is None:
            return None, pa.nulls(len(content_hashes), pa.int32())
        index = pc.index_in(content_hashes, value_set=cached.column("content_hash"))
        return cached, index

    def store(self, fingerprint: str, table: pa.Table) -> None:
        """Append newly computed rows (must hold ``content_hash``) as a new Parquet part."""
        if table.num_rows == 0:
            return
        folder = self._folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "FINGERPRINT").write_text(fingerprint + "\n")
        tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet"
        pq.write_table(table, tmp)
        tmp.rename(folder / f"part-{uuid.uuid4().hex}.parquet")
