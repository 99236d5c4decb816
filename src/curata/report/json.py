"""The machine-readable report: statistics and the JSON writer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata.dataset import Dataset


def dataset_statistics(dataset: Dataset) -> dict[str, Any]:
    """Record count and split/label distributions of ``dataset``."""
    labels = dataset.labels()
    splits = dataset.splits()
    stats: dict[str, Any] = {"num_rows": dataset.num_rows}
    if splits:
        stats["splits"] = dict(Counter("(none)" if s is None else s for s in splits).most_common())
    if labels:
        stats["labels"] = dict(Counter("(missing)" if v is None else v for v in labels).most_common())
        stats["num_labels"] = len({v for v in labels if v is not None})
    if labels and splits:
        by_split: dict[str, Counter[str]] = {}
        for s, v in zip(splits, labels, strict=True):
            by_split.setdefault("(none)" if s is None else s, Counter())["(missing)" if v is None else v] += 1
        stats["label_by_split"] = {s: dict(c.most_common()) for s, c in by_split.items()}
    return stats


def score_histograms(findings: pa.Table, bins: int = 10) -> dict[str, list[int]]:
    """Per check, counts of finding scores in ``bins`` equal bins over [0, 1]."""
    out: dict[str, list[int]] = {}
    if findings.num_rows == 0:
        return out
    # Arrow masks per check, not a Python string per finding (millions of them on large data),
    # over slices of the findings (which may be memory-mapped): nothing held per finding.
    from curata import outofcore

    names = sorted(pc.unique(findings.column("check")).to_pylist(), key=str)
    totals = {name: np.zeros(bins, np.int64) for name in names}
    for lo in range(0, findings.num_rows, HISTOGRAM_ROWS):
        part = findings.slice(lo, HISTOGRAM_ROWS)
        check = part.column("check")
        scores = np.asarray(part.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
        for name in pc.unique(check).to_pylist():
            mask = np.asarray(pc.equal(check, name).to_numpy(zero_copy_only=False), dtype=bool)
            totals[name] += np.histogram(scores[mask], bins=bins, range=(0.0, 1.0))[0]
        outofcore.release(part)
    for name in names:
        out[str(name)] = [int(c) for c in totals[name]]
    return out


#: Findings read at a time for the score histograms.
HISTOGRAM_ROWS = 1 << 18


def check_statistics(findings: pa.Table) -> dict[str, Any]:
    """Summaries of the model-based checks that the report draws as a whole, not record by record.

    ``rare_classes``: each rare class and its size (from ``class_imbalance``);
    ``sparse_clusters``: each sparse embedding cluster (``underrepresented``) with its size and scope.
    """
    out: dict[str, Any] = {}
    if findings.num_rows == 0:
        return out
    wanted = pc.is_in(findings.column("check"), value_set=pa.array(["class_imbalance", "underrepresented"]))
    rows = findings.filter(wanted).select(["check", "group_id", "evidence"]).to_pylist()
    rare: dict[str, int] = {}
    clusters: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["check"] not in ("class_imbalance", "underrepresented"):
            continue
        try:
            evidence = json.loads(r["evidence"] or "{}")
        except ValueError:
            evidence = {}
        if not isinstance(evidence, dict):
            continue
        if r["check"] == "class_imbalance" and "class" in evidence:
            rare[str(evidence["class"])] = int(evidence.get("class_size") or 0)
        elif r["check"] == "underrepresented" and r["group_id"]:
            entry = clusters.setdefault(
                str(r["group_id"]),
                {
                    "size": int(evidence.get("cluster_size") or 0),
                    "scope": str(evidence.get("scope") or "all"),
                },
            )
            entry["reported"] = entry.get("reported", 0) + 1
    if rare:
        out["rare_classes"] = dict(sorted(rare.items(), key=lambda kv: (kv[1], kv[0])))
    if clusters:
        out["sparse_clusters"] = dict(sorted(clusters.items(), key=lambda kv: (kv[1]["size"], kv[0])))
    return out


def _is_flat(value: Any) -> bool:
    """A list of scalars, or of lists of scalars: written on one line."""
    scalar = (str, int, float, bool, type(None))
    return all(
        isinstance(v, scalar) or (isinstance(v, (list, tuple)) and all(isinstance(w, scalar) for w in v))
        for v in value
    )


def _key(key: Any) -> str:
    """A mapping key as JSON writes it (strings as they are, numbers and literals as text)."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return str(key)


def dumps(value: Any, indent: int = 2, level: int = 0) -> str:
    """JSON text indented like ``json.dumps(indent=2)``, except that lists of scalars (and lists of
    such lists) stay on one line, so long columns (histograms, map points) stay compact."""
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(_key(k))}: {dumps(v, indent, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        if _is_flat(value):
            return json.dumps(list(value), default=str, separators=(",", ":"))
        items = [inner + dumps(v, indent, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, default=str)


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as indented UTF-8 JSON (atomically: write then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(report) + "\n", encoding="utf-8")
    tmp.replace(path)
