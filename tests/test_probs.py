"""Out-of-sample predicted probabilities: the user's file, or curata's cross-validated ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curata.errors import ConfigError, InputError
from curata.io import read_dataset
from curata.knn import nearest_neighbours
from curata.signals.probs import cross_validated_probs, label_classes, load_pred_probs


def blobs(n_per: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 8)) * 4
    x = np.vstack([c + rng.normal(size=(n_per, 8)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per)
    return x, y


def test_label_classes_sort_numbers_numerically() -> None:
    assert label_classes(["10", "9", None, "1"]) == ["1", "9", "10"]
    assert label_classes(["dog", "cat", "dog"]) == ["cat", "dog"]


def test_cross_validated_probs_flag_flipped_labels() -> None:
    x, y = blobs()
    noisy = y.copy()
    flipped = np.array([3, 70, 150])
    noisy[flipped] = (y[flipped] + 1) % 3
    noisy[5] = -1  # unlabelled rows get no probabilities
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    nb = nearest_neighbours(unit, 10)
    probs = cross_validated_probs(x, noisy, 3, knn_index=nb.index, seed=0)
    assert np.isnan(probs[5]).all()
    labelled = np.flatnonzero(noisy >= 0)
    assert np.allclose(probs[labelled].sum(axis=1), 1.0)
    # Out of sample: a flipped record's given label gets little probability, its true class most.
    assert (probs[flipped, noisy[flipped]] < 0.5).all()
    assert (probs[flipped].argmax(axis=1) == y[flipped]).all()
    clean = np.setdiff1d(labelled, flipped)
    assert (probs[clean].argmax(axis=1) == y[clean]).mean() > 0.97
    again = cross_validated_probs(x, noisy, 3, knn_index=nb.index, seed=0)
    assert np.array_equal(np.nan_to_num(probs), np.nan_to_num(again))
    with pytest.raises(ConfigError, match="folds"):
        cross_validated_probs(x, noisy, 3, folds=1)


def test_load_pred_probs_from_npy_and_table(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(4)]
    pq.write_table(pa.table({"id": ids, "label": ["a", "b", "a", "b"]}), tmp_path / "d.parquet")
    ds = read_dataset(tmp_path / "d.parquet")
    matrix = np.array([[0.9, 0.1], [0.2, 0.8], [3.0, 1.0], [0.5, 0.5]])
    np.save(tmp_path / "p.npy", matrix)
    from_npy = load_pred_probs(tmp_path / "p.npy", ds, ["a", "b"])
    assert np.allclose(from_npy.probs[2], [0.75, 0.25])  # rows are renormalised
    order = [2, 0, 3, 1]
    table = pa.table({"record_id": [ids[i] for i in order], "a": matrix[order, 0], "b": matrix[order, 1]})
    pq.write_table(table, tmp_path / "p.parquet")
    from_table = load_pred_probs(tmp_path / "p.parquet", ds, ["a", "b"])
    assert np.allclose(from_table.probs, from_npy.probs)
    np.save(tmp_path / "bad.npy", matrix[:, :1])
    with pytest.raises(InputError, match=r"expected \(4, 2\)"):
        load_pred_probs(tmp_path / "bad.npy", ds, ["a", "b"])
    pq.write_table(table.drop_columns(["b"]), tmp_path / "nob.parquet")
    with pytest.raises(InputError, match="no column for class"):
        load_pred_probs(tmp_path / "nob.parquet", ds, ["a", "b"])


def test_cross_validated_probs_choose_regularisation_and_vote_weight() -> None:
    # sklearn's 8x8 digits (bundled, no download) as unit vectors with 20% of labels flipped: the
    # chosen C and vote weight give accurate out-of-sample probabilities, and the flips are found.
    from sklearn.datasets import load_digits

    from curata.label_issues import find_label_issues
    from curata.signals import probs as probs_module

    digits = load_digits()
    x = digits.data[:600].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    true = digits.target[:600].astype(np.int64)
    rng = np.random.default_rng(5)
    given = true.copy()
    flipped = rng.choice(600, 120, replace=False)
    given[flipped] = (true[flipped] + rng.integers(1, 10, flipped.size)) % 10
    nb = nearest_neighbours(x, 10)
    probs = cross_validated_probs(x, given, 10, knn_index=nb.index, seed=0)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == true).mean() >= 0.95
    res = find_label_issues(given, probs)
    truth = given != true
    tp = int((res.is_issue & truth).sum())
    assert tp / res.num_issues >= 0.9 and tp / truth.sum() >= 0.9, (tp, res.num_issues)
    # The chosen regression fits the given labels better out of sample than the former fixed C=1 on
    # the raw unit vectors (the criterion C is chosen by), and is sharper.
    features = probs_module._features(x, 256, 0)
    chosen = probs_module._choose_c(features, given, 10, 3000, 0)
    assert chosen in probs_module.C_GRID
    tuned = probs_module._out_of_fold(features, given, 10, chosen, 5, 0)
    former = probs_module._out_of_fold(x.astype(np.float64), given, 10, 1.0, 5, 0)
    assert probs_module._log_loss(tuned, given) < probs_module._log_loss(former, given)
    assert tuned.max(axis=1).mean() > former.max(axis=1).mean() + 0.05
    # Deterministic for a seed; an explicit vote weight is used as given.
    again = cross_validated_probs(x, given, 10, knn_index=nb.index, seed=0)
    assert np.array_equal(probs, again)
    votes_only = cross_validated_probs(x, given, 10, knn_index=nb.index, knn_weight=1.0)
    counts = np.stack([(given[nb.index] == c).sum(axis=1) for c in range(10)], axis=1)
    prior = np.bincount(given, minlength=10) / len(given)
    assert np.allclose(votes_only, (counts + prior) / (counts.sum(axis=1, keepdims=True) + 1.0))
    with pytest.raises(ConfigError, match="knn_weight"):
        cross_validated_probs(x, given, 10, knn_index=nb.index, knn_weight=1.5)


def test_wide_vectors_are_projected_and_scaled() -> None:
    from curata.signals.probs import _features

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)).astype(np.float32) * 7.0 + 3.0
    f = _features(x, 16, 0)
    assert f.shape == (300, 16) and f.dtype == np.float64
    assert np.allclose(f.mean(axis=0), 0.0, atol=1e-6)
    assert np.isclose(np.sqrt((f**2).sum(axis=1).mean()), 1.0)
    narrow = _features(x[:, :10], 16, 0)
    assert narrow.shape == (300, 10)
    # Too few labelled rows per class for the folds: uniform regression part, the vote alone decides.
    y = np.array([0, 1] + [-1] * 298, dtype=np.int64)
    out = cross_validated_probs(x, y, 2, folds=5)
    assert np.isnan(out[2:]).all() and np.allclose(out[:2], 0.5)
