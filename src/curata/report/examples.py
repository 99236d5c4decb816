"""Pick each check's worst findings and attach what a person needs to judge them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata.dataset import SPLIT_ALIASES, Dataset

MAX_TEXT_CHARS = 2_000


class _Previewer:
    """Looks up a record by id and renders its label, split, text or thumbnail."""

    def __init__(self, dataset: Dataset, name: str, pii_spans: dict[str, list[Any]] | None = None) -> None:
        self.dataset = dataset
        self.name = name
        self.pii_spans = pii_spans or {}
        self._rows: dict[str, int] | None = None

    def row_of(self, record_id: str) -> int | None:
        # A scan of the Arrow id column per previewed record (a few dozen per report), not a dict
        # of every id: that dict would be the largest object of an audit of millions of records.
        if self._rows is None:
            self._rows = {}
        if record_id not in self._rows:
            ids = self.dataset.record_ids
            if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
                ids = pc.cast(ids, pa.string())
            found = pc.index(ids, record_id).as_py()
            self._rows[record_id] = -1 if found is None else int(found)
        row = self._rows[record_id]
        return None if row < 0 else row

    def preview(self, record_id: str) -> dict[str, Any]:
        from curata.signals.pipeline import _image_value

        out: dict[str, Any] = {
            "record_id": record_id,
            "label": None,
            "split": None,
            "text": None,
            "image": None,
            "dataset": self.name,
        }
        row = self.row_of(record_id)
        if row is None:
            return out
        table = self.dataset.table.slice(row, 1)
        roles = self.dataset.roles
        if roles.label:
            value = table.column(roles.label)[0].as_py()
            out["label"] = None if value is None else str(value)
        if roles.split:
            value = table.column(roles.split)[0].as_py()
            out["split"] = None if value is None else SPLIT_ALIASES.get(str(value).lower(), str(value))
        if roles.text:
            value = self.dataset.take("text", np.array([row]))[0].as_py()
            if value is not None and record_id in self.pii_spans:
                from curata.signals.pii import redact_text

                # Personal data found in a record is never shown in clear, whichever check shows it.
                value = redact_text(str(value), self.pii_spans[record_id], style="mask")
            out["text"] = None if value is None else str(value)[:MAX_TEXT_CHARS]
        if roles.image:
            from curata.signals.image import thumbnail_data_uri

            data = _image_value(self.dataset.take("image", np.array([row]))[0].as_py(), self.dataset.root)
            out["image"] = thumbnail_data_uri(data) if data else None
        return out


#: Checks whose findings come in groups (a rare class, a sparse cluster) shown a few records each.
GROUPED_CHECKS = ("class_imbalance", "underrepresented")
#: Fewest records shown per group of a grouped check, when there are many groups.
PER_GROUP = 3


def pick_by_group(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` rows (sorted by score) spread over the best groups, a few records each.

    At most ``limit // PER_GROUP`` groups are used (those holding the highest scores); rows are
    taken from them in turn, so one large group does not hide the others.
    """
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("group_id") or r.get("record_id"), []).append(r)
    kept = list(groups.values())[: max(1, limit // PER_GROUP)]
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < limit and any(depth < len(g) for g in kept):
        for g in kept:
            if depth < len(g) and len(out) < limit:
                out.append(g[depth])
        depth += 1
    # Keep each group's records together, groups in score order.
    order = {id(g[0]): i for i, g in enumerate(kept)}
    position = {id(r): (order[id(g[0])], j) for g in kept for j, r in enumerate(g)}
    return sorted(out, key=lambda r: position[id(r)])


def pii_spans(findings: pa.Table) -> dict[str, list[Any]]:
    """The personal-data spans the ``pii`` check found in each record's text, by record id."""
    out: dict[str, list[Any]] = {}
    if findings.num_rows == 0:
        return out
    for row in findings.filter(pc.equal(findings.column("check"), "pii")).to_pylist():
        spans = json.loads(row["evidence"] or "{}").get("spans")
        if spans:
            out.setdefault(row["record_id"], []).extend(spans)
    return out


#: Findings scanned at a time when picking a check's best ones.
SCAN_ROWS = 1 << 18


def top_rows(findings: pa.Table, check: str, limit: int) -> list[int]:
    """Positions of ``check``'s ``limit`` findings of highest score (ties: earlier first), found
    in one pass over slices of ``SCAN_ROWS`` rows, holding ``limit`` candidates: no sort or
    position vector of every finding."""
    from curata import outofcore

    best_score = np.empty(0, np.float64)
    best_pos = np.empty(0, np.int64)
    for lo in range(0, findings.num_rows, SCAN_ROWS):
        part = findings.slice(lo, SCAN_ROWS)
        mine = np.flatnonzero(
            np.asarray(pc.equal(part.column("check"), check).to_numpy(zero_copy_only=False), dtype=bool)
        )
        if len(mine):
            scores = np.asarray(part.column("score").to_numpy(), dtype=np.float64)[mine]
            best_score = np.concatenate([best_score, scores])
            best_pos = np.concatenate([best_pos, lo + mine])
            keep = np.lexsort((best_pos, -best_score))[:limit]
            best_score, best_pos = best_score[keep], best_pos[keep]
        outofcore.release(part)
    return [int(p) for p in best_pos]


def worst_examples(
    findings: pa.Table, dataset: Dataset, refs: list[Dataset], per_check: int
) -> dict[str, list[dict[str, Any]]]:
    """Up to ``per_check`` findings per check, highest score first, with record previews."""
    data = _Previewer(dataset, "data", pii_spans(findings))
    ref_previewers = [_Previewer(r, f"reference {i}") for i, r in enumerate(refs, start=1)]
    out: dict[str, list[dict[str, Any]]] = {}
    if findings.num_rows == 0:
        return out
    # Only the chosen rows become Python dicts: highest score first, ties in findings order.
    check_col = findings.column("check")
    first_seen = pc.unique(check_col).to_pylist()
    for check in first_seen:
        if check not in GROUPED_CHECKS:
            # Row slices, not a take: a take over a chunked table may first combine every chunk,
            # and millions of (memory-mapped) findings would all be read for a few dozen rows.
            chosen_rows = top_rows(findings, check, per_check)
            rows = [r for i in chosen_rows for r in findings.slice(i, 1).to_pylist()]
        else:
            position = pa.array(np.arange(findings.num_rows, dtype=np.int64))
            part = pa.table({"score": findings.column("score"), "pos": position}).filter(
                pc.equal(check_col, check)
            )
            order = pc.sort_indices(part, sort_keys=[("score", "descending"), ("pos", "ascending")])
            rows = findings.take(part.column("pos").take(order)).to_pylist()
        chosen = pick_by_group(rows, per_check) if check in GROUPED_CHECKS else rows
        picked = []
        for r in chosen:
            related = None
            if r["related_id"] is not None:
                source = data
                if check == "contamination" and ref_previewers:
                    evidence = json.loads(r["evidence"] or "{}")
                    source = ref_previewers[int(evidence.get("reference_index", 1)) - 1]
                related = source.preview(r["related_id"])
            picked.append({**r, "record": data.preview(r["record_id"]), "related": related})
        out[check] = picked
    return out
