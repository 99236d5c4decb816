"""Pick each check's worst findings and attach what a person needs to judge them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from curata.dataset import SPLIT_ALIASES, Dataset

MAX_TEXT_CHARS = 2_000


class _Previewer:
    """Looks up a record by id and renders its label, split, text or thumbnail."""

    def __init__(self, dataset: Dataset, name: str) -> None:
        self.dataset = dataset
        self.name = name
        self._rows: dict[str, int] | None = None

    def row_of(self, record_id: str) -> int | None:
        if self._rows is None:
            self._rows = {}
            for row, rid in enumerate(self.dataset.record_ids.to_pylist()):
                self._rows.setdefault(str(rid), row)
        return self._rows.get(record_id)

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
            out["text"] = None if value is None else str(value)[:MAX_TEXT_CHARS]
        if roles.image:
            from curata.signals.image import thumbnail_data_uri

            data = _image_value(self.dataset.take("image", np.array([row]))[0].as_py(), self.dataset.root)
            out["image"] = thumbnail_data_uri(data) if data else None
        return out


def worst_examples(
    findings: pa.Table, dataset: Dataset, refs: list[Dataset], per_check: int
) -> dict[str, list[dict[str, Any]]]:
    """Up to ``per_check`` findings per check, highest score first, with record previews."""
    data = _Previewer(dataset, "data")
    ref_previewers = [_Previewer(r, f"reference {i}") for i, r in enumerate(refs, start=1)]
    by_check: dict[str, list[dict[str, Any]]] = {}
    for row in findings.to_pylist():
        by_check.setdefault(row["check"], []).append(row)
    out: dict[str, list[dict[str, Any]]] = {}
    for check, rows in by_check.items():
        rows.sort(key=lambda r: -r["score"])
        picked = []
        for r in rows[:per_check]:
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
