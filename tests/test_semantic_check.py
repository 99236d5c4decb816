"""The ``semantic_duplicate`` check: which record repeats which, and the automatic threshold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curata.audit import AuditSettings, audit
from curata.checks.semantic import AUTO_FLOOR, SemanticSettings, automatic_threshold, keep_first
from curata.errors import ConfigError
from curata.signals.embed import EmbedSettings

from conftest import write_parquet

CHECKER = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"


def test_a_chain_is_not_reported_through_its_middle() -> None:
    """0~1 and 1~2 are pairs but 0 and 2 are not: 1 repeats 0, and 2 stays (its partner went)."""
    pairs = np.array([[0, 1], [1, 2]])
    dup_of = keep_first(pairs, np.array([0.96, 0.97]), np.arange(3))
    assert dup_of.tolist() == [-1, 0, -1]


def test_a_duplicate_points_at_its_most_similar_kept_partner() -> None:
    pairs = np.array([[0, 2], [1, 2], [2, 3]])
    dup_of = keep_first(pairs, np.array([0.96, 0.99, 0.98]), np.arange(4))
    assert dup_of.tolist() == [-1, -1, 1, -1]


def test_rank_decides_who_is_kept() -> None:
    """The earlier-ranked record (e.g. train before test) is kept whatever the row order."""
    pairs = np.array([[0, 1]])
    assert keep_first(pairs, np.array([0.99]), np.array([1, 0])).tolist() == [1, -1]
    assert keep_first(np.zeros((0, 2), dtype=np.int64), np.zeros(0), np.arange(3)).tolist() == [-1, -1, -1]


def test_automatic_threshold_follows_the_nearest_neighbour_distances() -> None:
    assert automatic_threshold(np.full(100, 0.5)) == AUTO_FLOOR  # spread-out data: the floor
    crowded = automatic_threshold(np.full(100, 0.04))  # every record has a 0.96 neighbour
    assert crowded == pytest.approx(1 - 0.2 * 0.04)
    assert automatic_threshold(np.array([np.nan])) == AUTO_FLOOR
    with pytest.raises(ConfigError, match="min_cosine"):
        SemanticSettings(min_cosine=1.5)


def _crowded(tmp_path: Path) -> tuple[Path, AuditSettings, np.ndarray]:
    """120 records whose embeddings all lie near one direction (nearest-neighbour cosine ~0.97),
    plus 3 planted copies at cosine ~0.9999 of records 0..2."""
    rng = np.random.default_rng(5)
    centre = rng.normal(size=32)
    base = centre + 0.2 * rng.normal(size=(120, 32))
    copies = base[:3] + 0.002 * rng.normal(size=(3, 32))
    vectors = np.vstack([base, copies]).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -1)
    rows = [{"id": f"r{i}"} for i in range(120)] + [{"id": f"c{i}"} for i in range(3)]
    data = write_parquet(tmp_path / "crowded.parquet", rows)
    np.save(tmp_path / "crowded.npy", vectors)
    settings = AuditSettings(embed=EmbedSettings(embeddings_file=str(tmp_path / "crowded.npy")))
    return data, settings, sims


def test_crowded_embeddings_report_only_the_planted_copies(tmp_path: Path) -> None:
    data, settings, sims = _crowded(tmp_path)
    assert np.mean(sims[:120, :120].max(axis=1) >= 0.95) > 0.5  # a fixed 0.95 would flag most records
    result = audit(data, tmp_path / "out", workers=1, settings=settings, workspace=tmp_path / "ws")
    found = {r["record_id"]: r for r in result.findings.to_pylist() if r["check"] == "semantic_duplicate"}
    assert {rid: r["related_id"] for rid, r in found.items()} == {f"c{i}": f"r{i}" for i in range(3)}
    evidence = found["c0"]["evidence"]
    assert '"threshold_rule": "automatic"' in evidence
    if CHECKER.exists():  # ../shared/tools beside the repo (not in every clone)
        done = subprocess.run(
            [sys.executable, str(CHECKER), str(tmp_path / "out")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_given_threshold_is_used_as_given(tmp_path: Path) -> None:
    data, settings, sims = _crowded(tmp_path)
    fixed = AuditSettings(
        embed=settings.embed, semantic=SemanticSettings(min_cosine=0.95), checks=["semantic_duplicate"]
    )
    result = audit(data, tmp_path / "out", workers=1, settings=fixed, workspace=tmp_path / "ws")
    rows = [r for r in result.findings.to_pylist() if r["check"] == "semantic_duplicate"]
    assert len(rows) > 20 and all('"threshold_rule": "given"' in r["evidence"] for r in rows)
    # every reported pair is itself above the threshold: no chains through third records
    index = {f"r{i}": i for i in range(120)} | {f"c{i}": 120 + i for i in range(3)}
    assert all(sims[index[r["record_id"]], index[r["related_id"]]] >= 0.95 - 1e-6 for r in rows)


def test_clean_spread_out_embeddings_give_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    np.save(tmp_path / "e.npy", rng.normal(size=(200, 24)).astype(np.float32))
    data = write_parquet(tmp_path / "e.parquet", [{"id": f"e{i}"} for i in range(200)])
    settings = AuditSettings(embed=EmbedSettings(embeddings_file=str(tmp_path / "e.npy")))
    result = audit(data, tmp_path / "out", workers=1, settings=settings, workspace=tmp_path / "ws")
    assert result.report["checks"]["semantic_duplicate"]["status"] == "ok"
    assert not [r for r in result.findings.to_pylist() if r["check"] == "semantic_duplicate"]
