"""Redaction of personal data found by the ``pii`` check: spans in text, whole identifier cells.

Evidence (from a ``pii`` finding): ``{"field": COLUMN, "spans": [{"start", "end", "type"}, ...]}``
with character offsets into the column's text, or ``{"columns": [COLUMN, ...]}`` for cells that are
identifiers as a whole. A span becomes ``[TYPE]`` (e.g. ``[EMAIL]``), a listed cell ``[REDACTED]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REDACTED_CELL = "[REDACTED]"


def redact_text(text: str, spans: Iterable[Mapping[str, Any]]) -> str:
    """Replace each span of ``text`` with ``[TYPE]``; overlapping spans merge (the first type wins).

    Spans outside the text are clipped; malformed ones (no integer start/end) are ignored.
    """
    clean: list[tuple[int, int, str]] = []
    for span in spans:
        start, end = span.get("start"), span.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool):
            continue
        start, end = max(0, start), min(len(text), end)
        if end > start:
            clean.append((start, end, str(span.get("type") or "PII").upper()))
    clean.sort()
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in clean:
        if merged and start < merged[-1][1]:
            s, e, k = merged[-1]
            merged[-1] = (s, max(e, end), k)
        else:
            merged.append((start, end, kind))
    out: list[str] = []
    pos = 0
    for start, end, kind in merged:
        out.append(text[pos:start])
        out.append(f"[{kind}]")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redacted_values(evidences: Sequence[Mapping[str, Any]], value_of: Mapping[str, Any]) -> dict[str, str]:
    """New values per column for one record, given its pii evidences and its current values.

    ``value_of`` maps a column to the record's current value. Spans of several findings on one
    column are applied together (offsets refer to the original text).
    """
    spans: dict[str, list[Mapping[str, Any]]] = {}
    cells: set[str] = set()
    for ev in evidences:
        if ev.get("spans") and isinstance(ev.get("field"), str):
            spans.setdefault(ev["field"], []).extend(s for s in ev["spans"] if isinstance(s, Mapping))
        for col in ev.get("columns") or ():
            if isinstance(col, str):
                cells.add(col)
    out: dict[str, str] = {}
    for col, col_spans in spans.items():
        if col in cells or col not in value_of or value_of[col] is None:
            continue
        out[col] = redact_text(str(value_of[col]), col_spans)
    for col in cells:
        if col in value_of:
            out[col] = REDACTED_CELL
    return out
