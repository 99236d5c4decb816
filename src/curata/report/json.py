"""The machine-readable report: statistics and the JSON writer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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
    checks = np.asarray(findings.column("check").to_pylist(), dtype=object)
    scores = np.asarray(findings.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    for name in sorted(set(checks.tolist())):
        counts, _ = np.histogram(scores[checks == name], bins=bins, range=(0.0, 1.0))
        out[str(name)] = [int(c) for c in counts]
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as indented UTF-8 JSON (atomically: write then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
