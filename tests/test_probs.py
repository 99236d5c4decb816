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
