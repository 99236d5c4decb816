"""Signal cache: per-record signals stored in the workspace, keyed by content hash and fingerprint."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
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
        return pa.concat_tables([from_disk(pq.read_table(p)) for p in parts], promote_options="default")

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
        pq.write_table(to_disk(table), tmp, row_group_size=ROW_GROUP_ROWS)
        tmp.rename(folder / f"part-{uuid.uuid4().hex}.parquet")


#: Rows per Parquet row group of a cache part (bounds the writer's buffers on large tables).
ROW_GROUP_ROWS = 262_144
#: Field metadata naming the fixed-size list a fixed-size binary column of the cache stands for.
_LIST_KEY = b"curata.fixed_size_list"


def to_disk(table: pa.Table) -> pa.Table:
    """Store fixed-size lists of numbers (MinHash band keys) as fixed-size binary, zero-copy.

    Parquet writes a list column with a repetition and a definition level per value, which costs
    several times the column in memory while writing and reading (+400 MiB for 3M rows of 21 band
    keys); a fixed-size binary column is written as it is.
    """
    columns: list[pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        typ = field.type
        if (
            pa.types.is_fixed_size_list(typ)
            and pa.types.is_primitive(typ.value_type)
            and column.null_count == 0
            and not pa.types.is_boolean(typ.value_type)
        ):
            width = typ.list_size * typ.value_type.byte_width
            chunks = [_list_as_binary(c, width) for c in column.chunks]
            columns.append(pa.chunked_array(chunks, pa.binary(width)))
            meta = {_LIST_KEY: f"{typ.value_type}:{typ.list_size}".encode()}
            fields.append(pa.field(field.name, pa.binary(width), field.nullable, meta))
        else:
            columns.append(column)
            fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


def from_disk(table: pa.Table) -> pa.Table:
    """Undo :func:`to_disk`: fixed-size binary columns marked as lists become fixed-size lists again."""
    columns: list[pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        marker = (field.metadata or {}).get(_LIST_KEY)
        if marker is None:
            columns.append(column)
            fields.append(field)
            continue
        value_name, size = marker.decode().rsplit(":", 1)
        value_type = pa.type_for_alias(value_name)
        typ = pa.list_(value_type, int(size))
        chunks = [_binary_as_list(c, typ) for c in column.chunks]
        columns.append(pa.chunked_array(chunks, typ))
        fields.append(pa.field(field.name, typ, field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


def _list_as_binary(chunk: pa.Array, width: int) -> pa.Array:
    values = chunk.values.slice(chunk.offset * chunk.type.list_size, len(chunk) * chunk.type.list_size)
    data = np.ascontiguousarray(values.to_numpy(zero_copy_only=False))
    return pa.Array.from_buffers(pa.binary(width), len(chunk), [None, pa.py_buffer(data)])


def _binary_as_list(chunk: pa.Array, typ: pa.DataType) -> pa.Array:
    width = chunk.type.byte_width
    buf = chunk.buffers()[1]
    if len(chunk) == 0 or buf is None:
        return pa.array([], typ)
    raw = np.frombuffer(
        buf,
        dtype=typ.value_type.to_pandas_dtype(),
        count=len(chunk) * typ.list_size,
        offset=chunk.offset * width,
    )
    return pa.FixedSizeListArray.from_arrays(pa.array(raw), typ.list_size)
