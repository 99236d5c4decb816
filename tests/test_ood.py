"""Out-of-distribution records against an in-distribution reference (``--ood-reference``)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curata.audit import AuditSettings, audit
from curata.checks.embedding import (
    ModelCheckSettings,
    benjamini_hochberg,
    out_of_distribution,
    tail_survival_ratio,
)
from curata.cli import app
from curata.engine import get_engine
from curata.errors import ConfigError, InputError
from curata.io import read_dataset
from curata.signals.embed import ENCODERS, EmbedSettings, TabularTransform, compute_embeddings, embed_like
from curata.signals.embed.tabular import tabular_features
from curata.signals.embed.tfidf import HashedTfidfSvd

from conftest import random_text, write_parquet

CONTRACT_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"
CENTRES = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
SHIFTED = np.array([2.5, 2.5, 6.0])  # a region the reference never visits


def _points(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.vstack([CENTRES[i % 3] + rng.normal(scale=0.6, size=3) for i in range(n)])


def _rows(prefix: str, points: np.ndarray, rng: np.random.Generator) -> list[dict[str, object]]:
    colours = rng.choice(["red", "green", "blue"], size=len(points))
    return [
        {"id": f"{prefix}{i}", "a": float(p[0]), "b": float(p[1]), "c": float(p[2]), "colour": str(col)}
        for i, (p, col) in enumerate(zip(points, colours, strict=True))
    ]


def _training_set(tmp_path: Path, n: int = 400, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    return write_parquet(tmp_path / "train.parquet", _rows("t", _points(rng, n), rng))


def _batch_with_shift(tmp_path: Path, n_clean: int = 200, n_shifted: int = 25) -> tuple[Path, set[str]]:
    """A new batch: ``n_clean`` records like the training set, then a dense block from elsewhere."""
    rng = np.random.default_rng(2)
    clean = _points(rng, n_clean)
    shifted = SHIFTED + rng.normal(scale=0.3, size=(n_shifted, 3))
    rows = _rows("n", np.vstack([clean, shifted]), rng)
    planted = {f"n{i}" for i in range(n_clean, n_clean + n_shifted)}
    return write_parquet(tmp_path / "batch.parquet", rows), planted


def _ood(result: object) -> dict[str, dict[str, object]]:
    rows = result.findings.to_pylist()  # type: ignore[attr-defined]
    out = {}
    for r in rows:
        evidence = json.loads(r["evidence"] or "{}")
        if r["check"] == "outlier" and evidence.get("kind") == "out_of_distribution":
            out[r["record_id"]] = {**r, "evidence": evidence}
    return out


def test_conformal_p_values_are_uniform_for_the_same_distribution() -> None:
    """Same-distribution queries: p-values ~ uniform, and BH flags nothing in (almost) every draw."""
    with_flags = 0
    shares = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        reference = rng.normal(size=(300, 4)).astype(np.float32)
        queries = rng.normal(size=(200, 4)).astype(np.float32)
        found = out_of_distribution(queries, reference, 10, "euclidean", fdr=0.05)
        assert ((found.p_value > 0) & (found.p_value <= 1)).all()
        with_flags += int(found.flagged.any())
        shares.append(float((found.p_value <= 0.2).mean()))
    assert with_flags <= 2  # BH at 5%: P(any flag) <= 0.05 per draw
    assert 0.15 <= float(np.mean(shares)) <= 0.22  # conservative by construction, not much


def test_heavy_tails_and_many_queries_beyond_the_reference_stay_quiet() -> None:
    """Queries past the reference's largest distance get extrapolated p-values; a heavy-tailed
    distribution (Student t, 3 degrees of freedom) with ten times more queries than reference
    records puts dozens there, and still nothing is flagged in (almost) every draw."""
    with_flags = 0
    extrapolated = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        reference = rng.standard_t(3, size=(150, 4)).astype(np.float32)
        queries = rng.standard_t(3, size=(1500, 4)).astype(np.float32)
        found = out_of_distribution(queries, reference, 10, "euclidean", fdr=0.05)
        with_flags += int(found.flagged.any())
        extrapolated += int(found.extrapolated.sum())
    assert extrapolated >= 20 * 5
    assert with_flags <= 2


def test_tail_extrapolation_decreases_from_the_largest_reference_distance() -> None:
    from scipy.stats import gamma

    reference = np.sort(np.random.default_rng(5).gamma(4.0, size=200))
    largest = reference[-1]
    beyond = np.array([largest, largest * 1.1, largest * 1.5, largest * 3])
    ratio = tail_survival_ratio(beyond, reference)
    assert ratio[0] == 1.0 and (np.diff(ratio) < 0).all() and ratio[-1] < 0.05
    truth = gamma(4.0).sf(beyond) / gamma(4.0).sf(largest)
    assert (ratio >= truth).all()  # a light tail is over-estimated: p-values err towards flagging less
    flat = np.sort(np.r_[np.linspace(0.1, 0.5, 150), np.full(50, 0.5)])
    assert tail_survival_ratio(np.array([0.6, 5.0]), flat).tolist() == [1.0, 1.0]  # nothing to fit


def test_a_planted_block_gets_the_smallest_p_values() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(300, 4)).astype(np.float32)
    queries = np.vstack([rng.normal(size=(200, 4)), 4.0 + 0.5 * rng.normal(size=(20, 4))]).astype(np.float32)
    found = out_of_distribution(queries, reference, 10, "euclidean", fdr=0.05)
    flagged = set(np.flatnonzero(found.flagged).tolist())
    assert set(range(200, 220)) <= flagged and len(flagged) <= 21  # BH at 5%: about 1 false in 20
    assert found.extrapolated[200:].all() and (found.reference_quantile[200:] == 1.0).all()
    assert (found.p_value[200:] < 1 / 301).all()  # farther than every reference record, by far
    assert found.p_value[:200].min() >= found.p_value[200:].max()
    assert found.exact and found.k == 10


def test_benjamini_hochberg_steps_up() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # Ranks 1..10 at 5%: thresholds 0.005, 0.01, ...; the largest passing rank is 2.
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    assert not benjamini_hochberg(np.array([0.5, 0.9]), 0.05).any()
    assert benjamini_hochberg(np.empty(0), 0.05).shape == (0,)
    with pytest.raises(ConfigError, match="ood_fdr"):
        ModelCheckSettings(ood_fdr=0.0)


def test_shifted_block_of_a_new_batch_is_out_of_distribution(tmp_path: Path) -> None:
    train = _training_set(tmp_path)
    batch, planted = _batch_with_shift(tmp_path)
    result = audit(batch, tmp_path / "out", workers=1, settings=AuditSettings(ood_reference=str(train)))
    assert result.report["checks"]["outlier"]["status"] == "ok"
    assert result.report["settings"]["ood_reference"] == str(train)
    found = _ood(result)
    hits = planted & set(found)
    assert len(hits) == len(planted)  # recall 1
    assert len(set(found) - planted) <= 1  # precision >= 25/26
    finding = found[sorted(hits)[0]]
    evidence = finding["evidence"]
    assert evidence["reference"] == str(train)
    assert evidence["nearest_reference_id"].startswith("t")  # the reference's own id column
    assert evidence["reference_quantile"] == 1.0 and evidence["distance"] > 0
    assert finding["severity"] == "warning" and finding["related_id"] is None
    assert 0.99 < finding["score"] <= 1.0
    assert "\n" not in finding["message"] and "out of distribution vs train.parquet" in finding["message"]
    assert evidence["p_value_extrapolated"] is True and evidence["p_value"] < 1 / 401
    # The block is dense, so the in-data statistic alone sees at most its fringe: the reference all.
    in_data = {
        r["record_id"]
        for r in result.findings.to_pylist()
        if r["check"] == "outlier" and json.loads(r["evidence"])["kind"] == "in_data"
    }
    assert len(in_data & planted) <= 5


def test_a_batch_from_the_same_distribution_gets_nothing(tmp_path: Path) -> None:
    train = _training_set(tmp_path)
    rng = np.random.default_rng(7)
    batch = write_parquet(tmp_path / "same.parquet", _rows("s", _points(rng, 300), rng))
    result = audit(batch, tmp_path / "out", workers=1, settings=AuditSettings(ood_reference=str(train)))
    assert result.report["checks"]["outlier"]["status"] == "ok"
    assert len(_ood(result)) == 0


def test_a_batch_smaller_than_twenty_records_is_still_compared(tmp_path: Path) -> None:
    train = _training_set(tmp_path)
    rng = np.random.default_rng(8)
    points = np.vstack([_points(rng, 6), SHIFTED + rng.normal(scale=0.3, size=(3, 3))])
    batch = write_parquet(tmp_path / "small.parquet", _rows("m", points, rng))
    without = audit(batch, tmp_path / "o1", workers=1)
    assert without.report["checks"]["outlier"]["status"] == "skipped"
    result = audit(batch, tmp_path / "o2", workers=1, settings=AuditSettings(ood_reference=str(train)))
    assert set(_ood(result)) == {"m6", "m7", "m8"}


def test_tabular_transform_reproduces_the_data_features_and_encodes_another_table(tmp_path: Path) -> None:
    rows = [
        {"id": f"r{i}", "x": float(i), "n": i % 7, "colour": ["red", "blue"][i % 2], "label": "a"}
        for i in range(40)
    ]
    rows[3]["x"] = None
    ds = read_dataset(write_parquet(tmp_path / "d.parquet", rows))
    transform = TabularTransform.fit(ds)
    assert np.array_equal(transform.apply(ds), tabular_features(ds).matrix)
    other = read_dataset(
        write_parquet(
            tmp_path / "o.parquet",
            [{"x": 19.5, "n": 3, "colour": "blue"}, {"x": None, "n": 100, "colour": "purple"}],
        )
    )
    matrix = transform.apply(other)
    assert matrix.shape == (2, 4)
    assert abs(float(matrix[0, 0])) < 0.05  # the data's mean, in the data's units
    assert matrix[1, 1] > 3  # far out on the data's scale
    assert matrix[1, 2:].tolist() == [0.0, 0.0]  # a colour the data never had
    missing = read_dataset(write_parquet(tmp_path / "m.parquet", [{"x": 1.0, "colour": "red"}]))
    with pytest.raises(InputError, match="no column 'n'"):
        transform.apply(missing)


@dataclass
class SmallTfidf(HashedTfidfSvd):
    """The tf-idf/SVD encoder with fewer hash buckets and dimensions: fitting it takes no time."""

    dim: int = 16
    n_features: int = 1 << 12


def test_text_reference_is_embedded_with_the_data_fitted_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tf-idf/SVD encoder fitted on the data embeds the reference: equal texts, equal vectors."""
    monkeypatch.setitem(ENCODERS, "tfidf-svd", SmallTfidf)
    rng = random.Random(4)
    other_words = ["quantum", "ledger", "invoice", "tax", "payroll", "audit", "fiscal", "asset", "equity"]
    texts = [random_text(rng, 25) for _ in range(60)]
    shifted = [" ".join(rng.choice(other_words) for _ in range(25)) for _ in range(12)]
    reference = [random_text(rng, 25) for _ in range(80)] + texts[:5]
    data = write_parquet(tmp_path / "d.parquet", [{"text": t} for t in texts + shifted])
    ref = write_parquet(tmp_path / "r.parquet", [{"text": t} for t in reference])
    ds, ref_ds = read_dataset(data), read_dataset(ref)
    settings = EmbedSettings(encoder="tfidf-svd")
    engine = get_engine("local", 1)
    emb = compute_embeddings(ds, settings, engine, None, tmp_path / "enc")
    assert isinstance(emb.encoder, HashedTfidfSvd) and emb.encoder.dim == 16 and emb.encoder.is_fitted()
    ref_emb = embed_like(ref_ds, ds, emb, settings, engine, None, tmp_path / "enc")
    assert ref_emb.source == emb.source  # the same fitted encoder (its fingerprint names the fit)
    assert np.allclose(ref_emb.vectors[80:], emb.vectors[:5], atol=1e-6)
    with pytest.raises(ConfigError, match="embeddings file"):
        embed_like(ref_ds, ds, emb, EmbedSettings(embeddings_file="x.npy"), engine, None, tmp_path)

    result = audit(
        data,
        tmp_path / "out",
        workers=1,
        workspace=tmp_path / "ws",
        settings=AuditSettings(embed=settings, ood_reference=str(ref)),
    )
    found = set(_ood(result))
    planted = {str(i) for i in range(60, 72)}
    assert len(found & planted) >= 11 and len(found - planted) <= 1


def test_embedding_column_is_read_from_both_datasets(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    scale = np.r_[np.ones(4), np.full(4, 0.05)]  # the reference lives near the first four axes
    ref_vectors = rng.normal(size=(150, 8)) * scale
    data_vectors = np.vstack([rng.normal(size=(60, 8)) * scale, rng.normal(size=(10, 8)) * scale[::-1]])
    ref = write_parquet(
        tmp_path / "r.parquet", [{"id": f"r{i}", "vec": v.tolist()} for i, v in enumerate(ref_vectors)]
    )
    data = write_parquet(
        tmp_path / "d.parquet", [{"id": f"d{i}", "vec": v.tolist()} for i, v in enumerate(data_vectors)]
    )
    settings = AuditSettings(embed=EmbedSettings(embedding_column="vec"), ood_reference=str(ref))
    result = audit(data, tmp_path / "out", workers=1, settings=settings)
    found = set(_ood(result))
    planted = {f"d{i}" for i in range(60, 70)}
    assert planted <= found and len(found - planted) <= 1  # BH at 5%
    with pytest.raises(ConfigError, match="--ood-reference cannot be embedded from an --embeddings file"):
        AuditSettings(embed=EmbedSettings(embeddings_file="e.npy"), ood_reference=str(ref))


@pytest.mark.skipif(
    not CONTRACT_TOOL.exists(), reason="../shared/tools/check_findings.py not beside the repo"
)
def test_cli_ood_reference_end_to_end(tmp_path: Path) -> None:
    train = _training_set(tmp_path)
    batch, planted = _batch_with_shift(tmp_path)
    runner = CliRunner()
    out = tmp_path / "out"
    ok = runner.invoke(app, ["audit", str(batch), "--out", str(out), "--ood-reference", str(train), "-q"])
    assert ok.exit_code == 0, ok.output
    findings = pq.read_table(out / "findings.parquet").to_pylist()
    ood = {
        r["record_id"]
        for r in findings
        if r["check"] == "outlier" and json.loads(r["evidence"])["kind"] == "out_of_distribution"
    }
    assert planted <= ood and len(ood - planted) <= 1
    proc = subprocess.run([sys.executable, str(CONTRACT_TOOL), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "contract holds" in proc.stdout
    strict = ["--checks", "outlier", "--fail-on", "warning", "-q"]
    failing = runner.invoke(
        app, ["audit", str(batch), "--out", str(tmp_path / "o2"), "--ood-reference", str(train), *strict]
    )
    assert failing.exit_code == 1, failing.output


def test_cli_bad_ood_reference_is_one_line(tmp_path: Path) -> None:
    batch, _ = _batch_with_shift(tmp_path, n_clean=30, n_shifted=0)
    texts = write_parquet(tmp_path / "texts.parquet", [{"text": f"some words {i}"} for i in range(30)])
    tiny = write_parquet(tmp_path / "tiny.parquet", [{"a": 1.0, "b": 2.0, "c": 3.0, "colour": "red"}] * 5)
    np.save(tmp_path / "e.npy", np.zeros((30, 2)))
    runner = CliRunner()
    cases = [
        (["--ood-reference", str(tmp_path / "missing.parquet")], "missing.parquet"),
        (["--ood-reference", str(texts)], "holds text"),
        (["--ood-reference", str(tiny)], "at least 20"),
        (["--ood-reference", str(texts), "--embeddings", str(tmp_path / "e.npy")], "--embedding-column"),
    ]
    for i, (options, expected) in enumerate(cases):
        res = runner.invoke(app, ["audit", str(batch), "--out", str(tmp_path / f"o{i}"), "-q", *options])
        assert res.exit_code == 2, (options, res.output)
        assert "Traceback" not in res.output and expected in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
