"""Tests of the embedding map (``curata.report.embedding_map``) and its place in report.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curata.audit import AuditSettings, audit
from curata.checks.base import Context
from curata.io import read_dataset
from curata.report.embedding_map import (
    MAX_POINTS,
    build_map,
    embedding_map,
    fit_pca,
    map_view,
    no_embeddings_reason,
)
from curata.report.json import dumps
from curata.signals.embed import Embeddings, EmbedSettings

from conftest import write_parquet

VALIDATOR = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"


def two_clusters(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` points, the first half around +5 on every axis and the second half around -5."""
    rng = np.random.default_rng(seed)
    half = n // 2
    return np.vstack([rng.normal(5, 1, (half, d)), rng.normal(-5, 1, (n - half, d))]).astype(np.float32)


def flags(check: str, ids: list[str], severity: str = "warning") -> list[dict[str, Any]]:
    return [{"check": check, "record_id": rid, "severity": severity, "score": 0.5} for rid in ids]


def test_map_is_deterministic_and_compact() -> None:
    x = two_clusters(300)
    ids = [f"id{i}" for i in range(300)]
    labels = ["a" if i < 150 else "b" for i in range(300)]
    found = flags("outlier", ["id3", "id200"])
    first = build_map(x, ids, labels, found, max_points=100, seed=1)
    again = build_map(x.copy(), list(ids), list(labels), list(found), max_points=100, seed=1)
    assert json.dumps(first) == json.dumps(again)
    other_seed = build_map(x, ids, labels, found, max_points=100, seed=2)
    assert other_seed["points"]["id"] != first["points"]["id"]  # the seed picks the sample
    pts = first["points"]
    assert first["available"] and first["method"] == "pca" and first["num_points"] == 100
    assert {"id3", "id200"} <= set(pts["id"])
    assert all(len(pts[k]) == 100 for k in ("id", "x", "y", "label", "checks", "severity"))
    assert max(abs(v) for v in pts["x"] + pts["y"]) <= 1.0
    assert all(round(v, 3) == v for v in pts["x"] + pts["y"])
    assert first["labels"] == ["a", "b"] and first["checks"] == ["outlier"]
    # one line per column in report.json: 4,000 points stay small
    big = build_map(two_clusters(5000, 16), [f"rec-{i:05d}" for i in range(5000)], None, None)
    text = dumps({"embedding_map": big})
    assert big["num_points"] == MAX_POINTS and len(text) < 160_000 and text.count("\n") < 30


def test_sampling_cap_keeps_flagged_records_fairly() -> None:
    n = 6000
    x = two_clusters(n, 8)
    ids = [f"r{i}" for i in range(n)]
    many = flags("semantic_duplicate", ids[:3000])
    few = flags("label_issue", ids[4000:4010], "error")
    out = build_map(x, ids, None, many + few, max_points=1000, max_flagged=200)
    pts = out["points"]
    assert out["num_points"] == 1000 and len(set(pts["id"])) == 1000
    assert out["num_flagged"] == 3010
    chosen = set(pts["id"])
    assert set(ids[4000:4010]) <= chosen  # the small check is not crowded out
    flagged = sum(1 for c in pts["checks"] if c)
    assert 200 <= flagged < 1000  # the cap, plus flagged ones the uniform sample brings in
    li = out["checks"].index("label_issue")
    for rid, checks, sev in zip(pts["id"], pts["checks"], pts["severity"], strict=True):
        if rid in ids[4000:4010]:
            assert checks == [li] and sev == "error"
        elif not checks:
            assert sev is None
    assert set(pts["label"]) == {-1}  # no labels: all grey
    assert build_map(x, ids, None, few, max_points=10, max_flagged=50)["num_points"] == 10


def test_projection_separates_two_clusters() -> None:
    x = two_clusters(400, 64, seed=3)
    out = build_map(x, [str(i) for i in range(400)], None, None)
    xs = np.asarray(out["points"]["x"])
    ids = np.asarray(out["points"]["id"], dtype=int)
    a, b = xs[ids < 200], xs[ids >= 200]
    gap = max(a.min() - b.max(), b.min() - a.max())
    assert gap > 0.5  # PC1 splits the clusters, far apart in [-1, 1]
    assert out["explained_variance"][0] > 0.8
    # The directions match an exact SVD (up to sign).
    rng = np.random.default_rng(4)
    m = rng.normal(size=(500, 20)) * np.linspace(5, 0.5, 20)
    _, comps, explained = fit_pca(m.astype(np.float32))
    _, s, vh = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    for j in range(2):
        assert abs(float(np.dot(comps[:, j], vh[j]))) > 0.999
    assert explained[0] == pytest.approx(s[0] ** 2 / (s**2).sum(), rel=1e-3)


def test_degenerate_inputs() -> None:
    one = build_map(np.ones((1, 4)), ["only"], ["x"], None)
    assert one["points"]["x"] == [0.0] and one["points"]["y"] == [0.0]
    same = build_map(np.ones((5, 3)), list("abcde"), None, None)
    assert same["points"]["x"] == [0.0] * 5
    none_ok = build_map(np.zeros((3, 2)), list("abc"), None, None, ok=np.zeros(3, dtype=bool))
    assert none_ok == {"available": False, "reason": "no record has a usable embedding"}
    skipped = build_map(np.eye(4), list("abcd"), None, None, ok=np.array([1, 0, 1, 1], dtype=bool))
    assert skipped["points"]["id"] == ["a", "c", "d"]
    broken = np.eye(4)
    broken[1, 2] = np.nan
    assert build_map(broken, list("abcd"), None, None)["points"]["id"] == ["a", "c", "d"]
    view = map_view(build_map(np.eye(3), list("abc"), ["p", None, "q"], flags("outlier", ["b"])))
    assert view is not None and view["available"]
    assert [entry["name"] for entry in view["legend"]] == ["p", "q", "no label"]
    assert view["rings"] == [{"severity": "warning", "colour": "#d98c00", "count": 1}]


def test_map_uses_cached_embeddings_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_parquet(tmp_path / "d.parquet", [{"id": f"v{i}", "label": "ab"[i % 2]} for i in range(40)])
    context = Context(dataset=read_dataset(data), signals={})
    status = {
        "outlier": {"status": "skipped", "reason": "fewer than 20 records"},
        "label_issue": {"status": "skipped", "reason": "not selected"},
    }
    missing = embedding_map(context, pa_findings(), status)
    assert missing["available"] is False
    assert "outlier was skipped (fewer than 20 records)" in missing["reason"]
    assert no_embeddings_reason(None) == "no check in this run needed embeddings"

    import curata.checks.embedding as embedding_checks
    import curata.signals.embed as embed

    def no_recompute(*args: object, **kwargs: object) -> None:
        pytest.fail("the map recomputed embeddings")

    monkeypatch.setattr(embed, "compute_embeddings", no_recompute)
    monkeypatch.setattr(embedding_checks, "compute_embeddings", no_recompute)
    vectors = two_clusters(40, 6)
    context.cache["embeddings"] = Embeddings(vectors, np.ones(40, dtype=bool), "pixels-v1-test")
    out = embedding_map(context, pa_findings(("label_issue", "v7")), status)
    assert out["available"] and out["num_points"] == 40 and out["embeddings"] == "pixels-v1-test"
    row = out["points"]["id"].index("v7")
    assert out["points"]["checks"][row] == [0] and out["checks"] == ["label_issue"]
    assert out["labels"] == ["a", "b"] and out["points"]["label"][row] == 1


def pa_findings(*pairs: tuple[str, str]) -> Any:
    from curata.checks.base import findings_table

    return findings_table(
        [{"check": c, "record_id": r, "score": 0.9, "severity": "warning", "message": "m"} for c, r in pairs]
    )


def test_audit_writes_the_map_into_report_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    vectors = two_clusters(60, 16, seed=9)
    vectors[5] = -vectors[5]  # a record of the first cluster placed in the second
    vectors[59] = rng.normal(0, 1, 16) * 40  # far from both
    rows = [{"id": f"v{i}", "label": "ab"[i >= 30], "split": "train"} for i in range(60)]
    data = write_parquet(tmp_path / "v.parquet", rows)
    np.save(tmp_path / "v.npy", vectors)
    settings = AuditSettings(embed=EmbedSettings(embeddings_file=str(tmp_path / "v.npy")))
    result = audit(data, tmp_path / "out", workers=1, settings=settings)
    stored = json.loads((tmp_path / "out" / "report.json").read_text())
    emap = stored["statistics"]["embedding_map"]
    assert emap == result.report["statistics"]["embedding_map"]
    assert emap["available"] and emap["num_points"] == 60 and emap["labels"] == ["a", "b"]
    flagged = {rid for rid, c in zip(emap["points"]["id"], emap["points"]["checks"], strict=True) if c}
    found = {r["record_id"] for r in result.findings.to_pylist()}
    assert flagged == found and found
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count('<circle class="p"') == 60
    validate(tmp_path / "out")
    # Checks that need no embeddings: no map, and the report says why.
    only = AuditSettings(checks=("exact_duplicate", "label_issue"), embed=settings.embed)
    plain = audit(data, tmp_path / "out2", workers=1, settings=AuditSettings(checks=("exact_duplicate",)))
    reason = plain.report["statistics"]["embedding_map"]["reason"]
    assert "outlier was skipped (not selected)" in reason
    assert (
        "No embedding map: no check in this run needed embeddings"
        in (tmp_path / "out2" / "report.html").read_text()
    )
    with_labels = audit(data, tmp_path / "out3", workers=1, settings=only)
    assert with_labels.report["statistics"]["embedding_map"]["available"]
    validate(tmp_path / "out2")


def validate(out: Path) -> None:
    """Run the shared findings-contract validator on an audit folder, when it is there."""
    if not VALIDATOR.exists():
        pytest.skip(f"{VALIDATOR} is not available")
    done = subprocess.run([sys.executable, str(VALIDATOR), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
