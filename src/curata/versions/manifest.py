"""A version's manifest: one row per record it holds, pointing at where the content lives.

``manifest.parquet`` columns: ``record_id``, ``content_hash`` (hex XXH3-128 of the record's content
as the version holds it: text as UTF-8, image file bytes, or for data without text/image the
canonical JSON of the row), ``split``, ``label`` (after relabelling), ``licence``, ``source``,
``origin`` (source file and row, or the image path relative to the source folder) and ``changed``
(the label or content differs from the source). Changed content itself is stored in
``changes/records.parquet`` (``record_id`` + one string column per changed field); everything else
is read from the source, which is never modified.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from curata.dataset import Dataset

MANIFEST_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("content_hash", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("licence", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("changed", pa.bool_()),
    ]
)
_LICENCE_NAMES = ("licence", "license", "spdx", "license_id", "licence_id")
_SOURCE_NAMES = ("source", "url", "origin", "provenance")
_BATCH = 4096


def _role_or_named_column(dataset: Dataset, role: str, names: Sequence[str]) -> str | None:
    """A column for a role the Roles class may not know yet (licence, source), else one by name."""
    named = getattr(dataset.roles, role, None)
    if isinstance(named, str) and named in dataset.table.column_names:
        return named
    lower = {c.lower(): c for c in dataset.table.column_names}
    for name in names:
        if name in lower:
            return str(lower[name])
    return None


def _strings(col: pa.ChunkedArray | None, n: int) -> list[str | None]:
    if col is None:
        return [None] * n
    return [None if v is None else str(v) for v in col.to_pylist()]


def record_origins(dataset: Dataset) -> list[str]:
    """Where each record's content lives: ``file#row`` for tables, the relative path for images."""
    n = dataset.num_rows
    if dataset.kind == "images" and dataset.roles.image is not None:
        return [str(v) for v in dataset.table.column(dataset.roles.image).to_pylist()]
    d = dataset.description
    files = [str(f) for f in d.get("files") or []]
    per_file = d.get("rows_per_file")
    if isinstance(per_file, list) and len(per_file) == len(files) and sum(per_file) == n:
        return [f"{f}#{r}" for f, k in zip(files, per_file, strict=True) for r in range(int(k))]
    splits, per_split = d.get("splits"), d.get("rows_per_split")
    if isinstance(splits, list) and isinstance(per_split, list) and sum(per_split) == n:
        return [f"{s}#{r}" for s, k in zip(splits, per_split, strict=True) for r in range(int(k))]
    prefix = files[0] if len(files) == 1 else ""
    return [f"{prefix}#{r}" for r in range(n)]


def row_digest(row: Mapping[str, Any]) -> str:
    """Content hash of a table row (data without text or image): XXH3-128 of its canonical JSON."""
    from curata.signals.pipeline import content_hash

    data = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return content_hash(data.encode("utf-8")).hex()


def content_digest(value: Any) -> str:
    """Content hash of one text (str) or image (bytes; None when unreadable), as the signals compute it."""
    from curata.signals.pipeline import content_hash

    if value is None:
        return content_hash(None).hex()
    if isinstance(value, str):
        return content_hash(value.encode("utf-8", "surrogatepass")).hex()
    return content_hash(bytes(value)).hex()


def iter_contents(dataset: Dataset) -> Iterator[Any]:
    """Each record's content in row order: text, image bytes, or (no content column) the row dict."""
    if dataset.modality == "none":
        for batch in dataset.table.to_batches(_BATCH):
            yield from batch.to_pylist()
        return
    from curata.signals.pipeline import content_items

    for batch in content_items(dataset, _BATCH):
        yield from batch


def digest(value: Any) -> str:
    """``content_digest`` for text/bytes, ``row_digest`` for a row dict."""
    return row_digest(value) if isinstance(value, dict) else content_digest(value)


def content_column(dataset: Dataset) -> str | None:
    """The column whose values the content hash is taken over (None: the whole row)."""
    if dataset.modality == "text":
        return dataset.roles.text
    if dataset.modality == "image":
        return dataset.roles.image
    return None


def column_values(dataset: Dataset, column: str, rows: np.ndarray) -> list[Any]:
    """Values of ``column`` at ``rows`` (a streamed content column is read from its files)."""
    for role in ("text", "image"):
        if getattr(dataset.roles, role) == column and column not in dataset.table.column_names:
            values: list[Any] = dataset.take(role, rows).to_pylist()  # type: ignore[arg-type]
            return values
    values = dataset.table.column(column).take(pa.array(rows, pa.int64())).to_pylist()
    return values


def build_changes(dataset: Dataset, redactions: Mapping[str, Sequence[Mapping[str, Any]]]) -> pa.Table | None:
    """The changed content of redacted records: ``record_id`` + one string column per changed field."""
    from curata.curate.redact import redacted_values

    if not redactions:
        return None
    ids = [str(x) for x in dataset.record_ids.to_pylist()]
    row_of = {rid: i for i, rid in enumerate(ids)}
    wanted = [rid for rid in ids if rid in redactions]
    rows = np.array([row_of[rid] for rid in wanted], dtype=np.int64)
    columns: set[str] = set()
    for evs in redactions.values():
        for ev in evs:
            if isinstance(ev.get("field"), str):
                columns.add(ev["field"])
            columns.update(c for c in ev.get("columns") or () if isinstance(c, str))
    known = set(dataset.table.column_names) | {c for c in (dataset.roles.text, dataset.roles.image) if c}
    columns &= known
    current = {c: column_values(dataset, c, rows) for c in sorted(columns)}
    new_values: dict[str, list[str | None]] = {c: [] for c in sorted(columns)}
    kept_ids: list[str] = []
    for i, rid in enumerate(wanted):
        changed = redacted_values(list(redactions[rid]), {c: current[c][i] for c in current})
        if not changed:
            continue
        kept_ids.append(rid)
        for c in new_values:
            new_values[c].append(changed.get(c))
    if not kept_ids:
        return None
    used = {c: v for c, v in new_values.items() if any(x is not None for x in v)}
    return pa.table(
        {
            "record_id": pa.array(kept_ids, pa.string()),
            **{c: pa.array(v, pa.string()) for c, v in used.items()},
        }
    )


def changed_values(changes: pa.Table | None) -> dict[str, dict[str, str]]:
    """``{record_id: {column: new value}}`` from a changes table."""
    if changes is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    for row in changes.to_pylist():
        rid = row.pop("record_id")
        out[str(rid)] = {k: v for k, v in row.items() if v is not None}
    return out


def build_manifest(
    dataset: Dataset,
    dropped: set[str],
    relabels: Mapping[str, str],
    changes: pa.Table | None,
    source: str,
) -> tuple[pa.Table, str]:
    """The manifest of the records ``dataset`` keeps after the plan (``MANIFEST_SCHEMA``), and the
    digest of the source data as read (every record, before the plan: see ``source_digest``)."""
    n = dataset.num_rows
    ids = [str(x) for x in dataset.record_ids.to_pylist()]
    splits = dataset.splits() or [None] * n
    labels = dataset.labels() or [None] * n
    licence_col = _role_or_named_column(dataset, "licence", _LICENCE_NAMES) or _role_or_named_column(
        dataset, "license", _LICENCE_NAMES
    )
    source_col = _role_or_named_column(dataset, "source", _SOURCE_NAMES)
    licences = _strings(dataset.table.column(licence_col) if licence_col else None, n)
    sources = _strings(dataset.table.column(source_col) if source_col else None, n)
    origins = record_origins(dataset)
    new = changed_values(changes)
    content_col = content_column(dataset)
    out: dict[str, list[Any]] = {f.name: [] for f in MANIFEST_SCHEMA}
    originals: list[tuple[str, str, str | None]] = []
    for i, value in enumerate(iter_contents(dataset)):
        rid = ids[i]
        original = digest(value)
        originals.append((rid, original, labels[i]))
        if rid in dropped:
            continue
        record_changes = new.get(rid, {})
        if isinstance(value, dict) and record_changes:
            value = {**value, **record_changes}
        elif content_col is not None and content_col in record_changes:
            value = record_changes[content_col]
        else:
            value = None
        label = relabels.get(rid, labels[i])
        out["record_id"].append(rid)
        out["content_hash"].append(original if value is None else digest(value))
        out["split"].append(splits[i])
        out["label"].append(label)
        out["licence"].append(licences[i])
        out["source"].append(sources[i] if sources[i] is not None else source)
        out["origin"].append(origins[i])
        out["changed"].append(bool(record_changes) or rid in relabels)
    return pa.table(out, schema=MANIFEST_SCHEMA), source_digest(originals)


def manifest_counts(manifest: pa.Table) -> dict[str, Any]:
    """Records in all, per split and per label (None shown as ``null``)."""

    def count(column: str) -> dict[str, int]:
        c = Counter("null" if v is None else str(v) for v in manifest.column(column).to_pylist())
        return dict(sorted(c.items()))

    return {
        "records": manifest.num_rows,
        "per_split": count("split"),
        "per_label": count("label"),
        "changed": int(sum(bool(v) for v in manifest.column("changed").to_pylist())),
    }


def source_digest(records: Sequence[tuple[str, str, str | None]]) -> str:
    """One SHA-256 standing for (record_id, content_hash, label) triples, whatever their order."""
    from curata.versions.files import canonical_json, sha256_bytes

    return sha256_bytes(canonical_json(sorted(records, key=lambda t: t[0])))


def data_digest(manifest: pa.Table) -> str:
    """``source_digest`` of a manifest's records: what the version holds, as one digest."""
    records = zip(
        manifest.column("record_id").to_pylist(),
        manifest.column("content_hash").to_pylist(),
        manifest.column("label").to_pylist(),
        strict=True,
    )
    return source_digest(list(records))
