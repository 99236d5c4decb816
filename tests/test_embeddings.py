"""Encoders, user embeddings, nearest neighbours and the embedding-based checks."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curata.audit import audit
from curata.engine import get_engine
from curata.errors import ConfigError, InputError
from curata.io import read_dataset
from curata.knn import nearest_neighbours
from curata.signals.cache import SignalCache
from curata.signals.embed import EmbedSettings, compute_embeddings
from curata.signals.embed.pixels import PixelEncoder
from curata.signals.embed.tabular import tabular_features
from curata.signals.embed.tfidf import HashedTfidfSvd

from conftest import edit_words, encode, pattern_image, random_text, write_parquet


def by_check(result: object, check: str) -> set[str]:
    rows = result.findings.to_pylist()  # type: ignore[attr-defined]
    return {r["record_id"] for r in rows if r["check"] == check}


def test_tfidf_svd_puts_edited_copies_next_to_their_originals(tmp_path: Path) -> None:
    rng = random.Random(3)
    base = [random_text(rng, 40) for _ in range(80)]
    texts = base + [edit_words(t, rng, 3) for t in base[:10]]
    enc = HashedTfidfSvd(dim=32).fit(texts, tmp_path)
    again = HashedTfidfSvd(dim=32).fit(texts, tmp_path)
    assert enc.fingerprint() == again.fingerprint()  # a seeded, content-determined fit
    vectors, ok = enc.encode([*texts, None, "   "])
    assert ok.tolist() == [True] * len(texts) + [False, False]
    assert np.allclose(np.linalg.norm(vectors[: len(texts)], axis=1), 1.0, atol=1e-5)
    sims = vectors[80:90] @ vectors[:80].T
    assert (sims.argmax(axis=1) == np.arange(10)).all()
    clone = pickle.loads(pickle.dumps(enc))
    assert not any(k.startswith("_loaded") for k in vars(clone))
    assert np.allclose(clone.encode(texts[:5])[0], vectors[:5])


def test_tfidf_svd_refuses_to_fit_on_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 3"):
        HashedTfidfSvd().fit(["only one", None, ""], tmp_path)
    with pytest.raises(ConfigError, match="fitted"):
        HashedTfidfSvd().encode(["x"])


def test_pixel_encoder_marks_undecodable_images() -> None:
    vectors, ok = PixelEncoder(side=8).encode([encode(pattern_image(1)), b"not an image", None])
    assert ok.tolist() == [True, False, False]
    assert vectors.shape == (3, 192) and np.allclose(vectors[1:], 0.0)


def test_embeddings_are_cached(tmp_path: Path) -> None:
    rng = random.Random(4)
    data = write_parquet(tmp_path / "d.parquet", [{"text": random_text(rng, 30)} for _ in range(40)])
    ds = read_dataset(data)
    cache = SignalCache(tmp_path / "ws")
    engine = get_engine("local", 1)
    first = compute_embeddings(ds, EmbedSettings(), engine, cache, tmp_path / "ws" / "enc")
    second = compute_embeddings(ds, EmbedSettings(), engine, cache, tmp_path / "ws" / "enc")
    assert (first.computed, first.cached) == (40, 0)
    assert (second.computed, second.cached) == (0, 40)
    assert np.array_equal(first.vectors, second.vectors)


def test_user_embeddings_file_and_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(30, 6)).astype(np.float32)
    table = pa.table({"id": [f"r{i}" for i in range(30)], "vec": matrix.tolist()})
    pq.write_table(table, tmp_path / "d.parquet")
    ds = read_dataset(tmp_path / "d.parquet")
    np.save(tmp_path / "e.npy", matrix)
    engine = get_engine("local", 1)
    from_file = compute_embeddings(
        ds, EmbedSettings(embeddings_file=str(tmp_path / "e.npy")), engine, None, tmp_path
    )
    from_col = compute_embeddings(ds, EmbedSettings(embedding_column="vec"), engine, None, tmp_path)
    assert np.allclose(from_file.vectors, from_col.vectors, atol=1e-6)
    assert from_file.ok.all()
    np.save(tmp_path / "bad.npy", matrix[:10])
    with pytest.raises(InputError, match=r"expected \(30, dim\)"):
        compute_embeddings(
            ds, EmbedSettings(embeddings_file=str(tmp_path / "bad.npy")), engine, None, tmp_path
        )
    with pytest.raises(ConfigError, match="unknown encoder"):
        EmbedSettings(encoder="nope")


def test_tabular_features_skip_roles_and_free_text(tmp_path: Path) -> None:
    rows = [
        {
            "id": f"r{i}",
            "x": float(i),
            "colour": ["red", "blue"][i % 2],
            "note": f"free text {i}",
            "label": "a",
        }
        for i in range(60)
    ]
    rows[3]["x"] = None
    ds = read_dataset(write_parquet(tmp_path / "t.parquet", rows))
    features = tabular_features(ds)
    assert features.columns == ["x", "colour"]
    assert features.matrix.shape == (60, 3)
    assert np.isfinite(features.matrix).all()


def test_nearest_neighbours_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[7] = x[8]  # an exact duplicate pair: each must find the other, never itself
    nb = nearest_neighbours(x, 5)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    truth = np.argsort(-sims, axis=1)[:, :5]
    assert nb.exact
    assert (nb.index[:, 0] == truth[:, 0]).mean() > 0.99
    assert nb.index[7, 0] == 8 and nb.index[8, 0] == 7
    assert not (nb.index == np.arange(300)[:, None]).any()
    assert np.allclose(1.0 - nb.distance[:, 0], sims[np.arange(300), truth[:, 0]], atol=1e-5)


def _tabular_with_planted(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    points = [centres[i % 3] + rng.normal(scale=0.5, size=3) for i in range(300)]
    labels = [["cat", "dog", "bird"][i % 3] for i in range(300)]
    points += [np.array([30.0, 30.0, 30.0]) + rng.normal(scale=0.3, size=3) for _ in range(2)]  # far away
    labels += ["cat", "dog"]
    points += [np.array([3.0, 3.0, 0.0]) + rng.normal(scale=0.05, size=3) for _ in range(6)]  # tiny clump
    labels += ["rare"] * 2 + ["bird"] * 4
    rows = [
        {"id": f"p{i}", "a": float(p[0]), "b": float(p[1]), "c": float(p[2]), "label": lab}
        for i, (p, lab) in enumerate(zip(points, labels, strict=True))
    ]
    return write_parquet(tmp_path / "points.parquet", rows)


def test_outliers_imbalance_and_coverage_gaps_on_tabular_data(tmp_path: Path) -> None:
    data = _tabular_with_planted(tmp_path)
    result = audit(data, tmp_path / "out", workers=1, workspace=tmp_path / "ws")
    status = result.report["checks"]
    assert status["outlier"]["status"] == "ok" and status["underrepresented"]["status"] == "ok"
    outliers = by_check(result, "outlier")
    assert {"p300", "p301"} <= outliers
    assert len(outliers) <= 6
    assert by_check(result, "class_imbalance") == {"p302", "p303"}
    gaps = by_check(result, "underrepresented")
    assert {f"p{i}" for i in range(302, 308)} <= gaps | outliers
    assert len(gaps) <= 12


def test_clean_clusters_give_no_outliers(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    rows = [
        {"id": f"q{i}", "a": float(v[0]), "b": float(v[1])} for i, v in enumerate(rng.normal(size=(200, 2)))
    ]
    result = audit(write_parquet(tmp_path / "clean.parquet", rows), tmp_path / "out", workers=1)
    assert len(by_check(result, "outlier")) <= 2  # a Gaussian has no gross outliers at z >= 4
    assert result.report["checks"]["class_imbalance"]["status"] == "skipped"


def test_cli_embedding_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curata.cli import app

    data = _tabular_with_planted(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(app, ["audit", str(data), "--out", str(tmp_path / "o1"), "--encoder", "nope"])
    assert bad.exit_code == 2 and "unknown encoder 'nope'" in bad.output and "Traceback" not in bad.output
    wrong = runner.invoke(app, ["audit", str(data), "--out", str(tmp_path / "o2"), "--encoder", "pixels"])
    assert wrong.exit_code == 2 and "encoder 'pixels' reads image" in wrong.output
    np.save(tmp_path / "e.npy", np.random.default_rng(0).normal(size=(308, 4)))
    ok = runner.invoke(
        app,
        ["audit", str(data), "--out", str(tmp_path / "o3"), "--embeddings", str(tmp_path / "e.npy"), "-q"],
    )
    assert ok.exit_code == 0, ok.output


def test_semantic_duplicates_across_splits_are_leakage(tmp_path: Path) -> None:
    """Planted same-meaning pairs (user embeddings) are found; the later split's copy is leakage."""
    rng = np.random.default_rng(9)
    base = rng.normal(size=(60, 16)).astype(np.float32)
    vectors = np.vstack([base, base[:4] + 0.01 * rng.normal(size=(4, 16)).astype(np.float32)])
    rows = [{"id": f"v{i}", "split": "train"} for i in range(60)]
    rows += [{"id": f"w{i}", "split": "test" if i < 2 else "train"} for i in range(4)]
    data = write_parquet(tmp_path / "v.parquet", rows)
    np.save(tmp_path / "v.npy", vectors)
    from curata.audit import AuditSettings

    settings = AuditSettings(embed=EmbedSettings(embeddings_file=str(tmp_path / "v.npy")))
    result = audit(data, tmp_path / "out", workers=1, settings=settings)
    found = {r["record_id"]: r for r in result.findings.to_pylist() if r["check"] == "semantic_duplicate"}
    assert set(found) == {"w0", "w1", "w2", "w3"}
    assert {rid: r["related_id"] for rid, r in found.items()} == {f"w{i}": f"v{i}" for i in range(4)}
    assert found["w0"]["severity"] == "error" and "leakage" in found["w0"]["message"]
    assert found["w2"]["severity"] == "warning" and "leakage" not in found["w2"]["message"]


def test_label_issues_from_curata_probabilities_and_from_a_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(3, 6)) * 5
    points = np.vstack([c + rng.normal(size=(80, 6)) for c in centres])
    truth = np.repeat(np.array(["ant", "bee", "cow"]), 80)
    given = truth.copy()
    flipped = list(range(5, 240, 12))  # 20 of 240 labels (8%) flipped
    for i in flipped:
        given[i] = {"ant": "bee", "bee": "cow", "cow": "ant"}[str(truth[i])]
    rows = [
        {"id": f"x{i}", **{f"f{j}": float(v) for j, v in enumerate(p)}, "label": str(g)}
        for i, (p, g) in enumerate(zip(points, given, strict=True))
    ]
    result = audit(write_parquet(tmp_path / "x.parquet", rows), tmp_path / "o1", workers=1)
    issues = {r["record_id"]: r for r in result.findings.to_pylist() if r["check"] == "label_issue"}
    planted = {f"x{i}" for i in flipped}
    assert len(planted & set(issues)) >= 18 and len(set(issues) - planted) <= 2
    assert issues["x185"]["message"].startswith("label 'ant' looks wrong: predicted 'cow'")  # a cow
    # Only ids and labels plus the user's probabilities: content checks are skipped, labels checked.
    probs = np.full((240, 3), 0.05)
    probs[np.arange(240), np.searchsorted(["ant", "bee", "cow"], truth)] = 0.9
    np.save(tmp_path / "p.npy", probs)
    only = write_parquet(
        tmp_path / "only.parquet", [{"id": f"x{i}", "label": str(g)} for i, g in enumerate(given)]
    )
    from curata.audit import AuditSettings

    second = audit(
        only, tmp_path / "o2", workers=1, settings=AuditSettings(pred_probs=str(tmp_path / "p.npy"))
    )
    found = {r["record_id"] for r in second.findings.to_pylist() if r["check"] == "label_issue"}
    assert found == planted
    assert second.report["checks"]["near_duplicate"]["status"] == "skipped"
    assert second.report["checks"]["outlier"]["status"] == "skipped"


def test_signal_content_hashes_spare_a_second_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fit sample is chosen from the signals' content hashes, without reading the texts again."""
    from curata.signals import pipeline
    from curata.signals.pipeline import SignalSettings, compute_signals

    rng = random.Random(15)
    data = write_parquet(tmp_path / "d.parquet", [{"text": random_text(rng, 30)} for _ in range(50)])
    ds = read_dataset(data)
    engine = get_engine("local", 1)
    signals = compute_signals(ds, engine, SignalSettings(), SignalCache(tmp_path / "ws"))
    assert signals.content_hashes is not None and len(signals.content_hashes) == 50
    settings = EmbedSettings(encoder="tfidf-svd", fit_sample=20)
    plain = compute_embeddings(ds, settings, engine, None, tmp_path / "a")
    calls = {"n": 0}
    original = pipeline.content_items

    def counting(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "content_items", counting)
    reused = compute_embeddings(
        ds, settings, engine, None, tmp_path / "b", content_hashes=signals.content_hashes
    )
    assert calls["n"] == 1  # only the encoding pass reads the content
    assert plain.source == reused.source and np.allclose(plain.vectors, reused.vectors)
