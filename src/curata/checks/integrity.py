"""Integrity checks: corrupt files, empty records, missing labels, duplicate ids."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

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
        errors = signals.column("error").to_pylist()
        n_bytes = signals.column("n_bytes").to_pylist()
        for row, (err, size) in enumerate(zip(errors, n_bytes, strict=True)):
            if err is None or size == 0 or row in bad:
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
            is_null = signals.column("is_null").to_pylist()
            bad = bad_rows(context)
            for row in np.flatnonzero(n_chars == 0):
                if int(row) in bad:
                    continue
                what = "text is missing" if is_null[row] else "text is empty or whitespace only"
                out.add(ids[row], score=1.0, severity="warning", message=what)
        else:
            bad = bad_rows(context)
            for i, size in enumerate(signals.column("n_bytes").to_pylist()):
                if size == 0 and i not in bad:
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
        """Report every occurrence of an id after its first."""
        rows_by_id: dict[str, list[int]] = defaultdict(list)
        for row, rid in enumerate(context.record_ids):
            rows_by_id[rid].append(row)
        out = FindingsBuilder(self.name)
        for rid, rows in rows_by_id.items():
            if len(rows) < 2:
                continue
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
