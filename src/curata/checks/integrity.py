"""Integrity checks: corrupt files, empty records, missing labels, duplicate ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata.checks.base import Check, Context, FindingsBuilder, register
from curata.signals.pipeline import Signals


def data_signals(context: Context) -> Signals:
    """The signals of the audited dataset."""
    signals: Signals = context.signals["data"]
    return signals


def bad_rows(context: Context) -> dict[int, str]:
    """Rows the reader could not parse (e.g. malformed JSON lines), with the reader's error."""
    bad = context.dataset.description.get("bad_records", [])
    return {int(b["row"]): str(b["error"]) for b in bad}


def wrong_type_rows(context: Context) -> dict[int, str]:
    """Rows holding a value of another kind than the rest of its column, with what is wrong."""
    wrong = context.dataset.description.get("wrong_types", [])
    return {int(b["row"]): str(b["error"]) for b in wrong}


@register
class CorruptCheck(Check):
    """Images (or files) that cannot be read or decoded."""

    name = "corrupt"
    description = "Records that cannot be parsed, and files that cannot be read or decoded."

    def applies(self, context: Context) -> str | None:
        """Image content can fail to decode; any table can hold records the reader could not parse."""
        if context.dataset.modality == "image" or bad_rows(context) or wrong_type_rows(context):
            return None
        return "no image column and every record parsed with consistent types"

    def run(self, context: Context) -> pa.Table:
        """Report unparseable records and undecodable images (empty files are the `empty` check)."""
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        bad = bad_rows(context)
        for row, error in sorted(bad.items()):
            out.add(
                ids[row],
                score=1.0,
                severity="error",
                message=f"record cannot be parsed: {error}",
                evidence={"error": error},
            )
        for row, error in sorted(wrong_type_rows(context).items()):
            if row in bad:
                continue
            out.add(
                ids[row],
                score=1.0,
                severity="warning",
                message=f"wrong type: {error}",
                evidence={"error": error, "kind": "wrong_type"},
            )
        if context.dataset.modality != "image":
            return out.table()
        signals = data_signals(context)
        # Rows with a decoding error and not empty (a missing size is not empty), read as columns.
        failed = pc.and_(pc.is_valid(signals.column("error")), pc.invert(_is_zero(signals.column("n_bytes"))))
        rows = np.flatnonzero(np.asarray(failed.to_numpy(zero_copy_only=False), dtype=bool))
        errors = signals.column("error").take(pa.array(rows, pa.int64())).to_pylist()
        n_bytes = signals.column("n_bytes").take(pa.array(rows, pa.int64())).to_pylist()
        for row, err, size in zip(rows.tolist(), errors, n_bytes, strict=True):
            if row in bad:
                continue
            out.add(
                ids[row],
                score=1.0,
                severity="error",
                message=f"cannot decode image: {err}",
                evidence={"error": err, "bytes": size},
            )
        return out.table()


@register
class EmptyCheck(Check):
    """Empty or whitespace-only text, and zero-byte files."""

    name = "empty"
    description = "Empty or whitespace-only text and zero-byte files."

    def applies(self, context: Context) -> str | None:
        """Needs text or image content."""
        return None if context.dataset.modality != "none" else "no text or image column"

    def run(self, context: Context) -> pa.Table:
        """Report records with no content."""
        signals = data_signals(context)
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        if signals.modality == "text":
            n_chars = np.asarray(signals.column("n_chars").to_numpy(zero_copy_only=False))
            rows = np.flatnonzero(n_chars == 0)
            is_null = signals.column("is_null").take(pa.array(rows, pa.int64())).to_pylist()
            bad = bad_rows(context)
            for row, null in zip(rows.tolist(), is_null, strict=True):
                if row in bad:
                    continue
                what = "text is missing" if null else "text is empty or whitespace only"
                out.add(ids[row], score=1.0, severity="warning", message=what)
        else:
            bad = bad_rows(context)
            empty = _is_zero(signals.column("n_bytes")).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(np.asarray(empty, dtype=bool)).tolist():
                if i not in bad:
                    out.add(ids[i], score=1.0, severity="warning", message="image file is empty (0 bytes)")
        return out.table()


@register
class MissingLabelCheck(Check):
    """Records without a label when the dataset has a label column."""

    name = "missing_label"
    description = "Records whose label is missing or blank."

    def applies(self, context: Context) -> str | None:
        """Needs a label role."""
        return None if context.dataset.roles.label else "no label column"

    def run(self, context: Context) -> pa.Table:
        """Report null or blank labels."""
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        for row, label in enumerate(context.dataset.labels()):
            if label is None or label.strip() == "":
                out.add(ids[row], score=1.0, severity="warning", message="label is missing")
        return out.table()


@register
class DuplicateIdCheck(Check):
    """Ids that appear on more than one record."""

    name = "duplicate_id"
    description = "The same id on more than one record."

    def applies(self, context: Context) -> str | None:
        """Needs an id role."""
        return None if context.dataset.roles.id else "no id column"

    def run(self, context: Context) -> pa.Table:
        """Report every occurrence of an id after its first (ids in order of first occurrence)."""
        out = FindingsBuilder(self.name)
        if context.dataset.description.get("duplicate_ids") == 0:  # counted when the data was read
            return out.table()
        ids = context.record_ids
        for group in repeated_id_rows(context.dataset.record_ids):
            rows = group.tolist()
            rid = ids[rows[0]]
            shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
            for row in rows[1:]:
                out.add(
                    rid,
                    score=1.0,
                    severity="error",
                    message=f"id '{rid}' is used by {len(rows)} records (rows {shown})",
                    evidence={"row": row, "rows": rows[:20]},
                )
        return out.table()


def _is_zero(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """True where ``values`` is 0, False where it is another number or missing."""
    return pc.fill_null(pc.equal(values, 0), False)


def repeated_id_rows(ids: pa.Array) -> list[np.ndarray]:
    """The rows of every id held by two or more rows, ascending, ids in order of first row.

    By a stable sort of the ids (Arrow, no Python string per row): equal ids end up next to each
    other with their rows ascending.
    """
    order = np.asarray(pc.sort_indices(ids).to_numpy(), dtype=np.int64)
    ordered = ids.take(pa.array(order))
    same = np.asarray(pc.equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False), dtype=bool)
    del ordered
    starts = np.flatnonzero(np.r_[True, ~same])
    sizes = np.diff(np.r_[starts, len(order)])
    repeated = sizes > 1
    groups = [order[a : a + k] for a, k in zip(starts[repeated], sizes[repeated], strict=True)]
    groups.sort(key=lambda g: int(g[0]))
    return groups
