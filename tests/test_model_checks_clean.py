"""Clean data gives the model-based checks nothing to report (each one's planted counterpart is
tested beside its own code: test_embeddings, test_semantic_check, test_quality, test_label_issues)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curata.audit import AuditSettings, audit

from conftest import write_parquet

MODEL_CHECKS = ("label_issue", "outlier", "class_imbalance", "underrepresented", "semantic_duplicate")


def _balanced_clusters(tmp_path: Path) -> Path:
    """Three classes of 120 records each, every class one Gaussian blob, labels all correct."""
    rng = np.random.default_rng(21)
    centres = rng.normal(size=(3, 5)) * 6
    names = ["ant", "bee", "cow"]
    rows = []
    for i in range(360):
        point = centres[i % 3] + rng.normal(size=5)
        rows.append(
            {"id": f"b{i}", **{f"f{j}": float(v) for j, v in enumerate(point)}, "label": names[i % 3]}
        )
    return write_parquet(tmp_path / "balanced.parquet", rows)


def test_clean_labelled_data_gives_no_model_findings(tmp_path: Path) -> None:
    settings = AuditSettings(checks=list(MODEL_CHECKS))
    result = audit(_balanced_clusters(tmp_path), tmp_path / "out", workers=1, settings=settings)
    status = result.report["checks"]
    for name in ("label_issue", "outlier", "class_imbalance", "underrepresented"):
        assert status[name]["status"] == "ok", (name, status[name])
    found: dict[str, list[str]] = {}
    for row in result.findings.to_pylist():
        found.setdefault(row["check"], []).append(row["record_id"])
    assert (
        not found.get("label_issue")
        and not found.get("class_imbalance")
        and not found.get("underrepresented")
    )
    assert len(found.get("outlier", [])) <= 2  # Gaussian tails: at most a stray record at z >= 4
    assert status["semantic_duplicate"]["status"] == "skipped"  # tabular features have no meaning


def test_clean_texts_give_no_model_findings(tmp_path: Path) -> None:
    """Distinct sentences from two topics, labelled correctly: no label issue, no semantic duplicate."""
    rng = np.random.default_rng(3)
    topics = {
        "weather": [
            "rain",
            "cloud",
            "storm",
            "sunny",
            "wind",
            "snow",
            "forecast",
            "cold",
            "warm",
            "humid",
            "thunder",
            "breeze",
        ],
        "cooking": [
            "bake",
            "oven",
            "flour",
            "sugar",
            "butter",
            "recipe",
            "boil",
            "pan",
            "salt",
            "pepper",
            "garlic",
            "onion",
        ],
    }
    rows = []
    for i in range(160):
        label = "weather" if i % 2 else "cooking"
        words = rng.choice(topics[label], size=12)
        rows.append({"id": f"t{i}", "text": " ".join(words) + f" number {i}", "label": label})
    settings = AuditSettings(checks=list(MODEL_CHECKS))
    result = audit(
        write_parquet(tmp_path / "t.parquet", rows), tmp_path / "out", workers=1, settings=settings
    )
    checks = [r["check"] for r in result.findings.to_pylist()]
    assert result.report["checks"]["label_issue"]["status"] == "ok"
    assert "label_issue" not in checks and "class_imbalance" not in checks
    assert checks.count("semantic_duplicate") == 0
