"""Out-of-sample predicted class probabilities: the user's (``--pred-probs``) or made by curata.

curata makes them without a model from the user: a K-fold cross-validated logistic regression on
the embeddings, averaged with a leave-one-out vote of the nearest neighbours' labels. No record is
scored by a model that saw its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curata.dataset import Dataset
from curata.errors import ConfigError, InputError


@dataclass(frozen=True)
class PredProbs:
    """``probs[i, c]``: out-of-sample probability that row i is class ``classes[c]``; ``source``
    names where they came from. Rows without a label or content have NaN rows."""

    probs: np.ndarray
    classes: list[str]
    source: str


def label_classes(labels: list[str | None]) -> list[str]:
    """The class names in the order probability columns use: sorted, numerically when all are numbers."""
    names = {v for v in labels if v is not None}
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def load_pred_probs(path: Path, dataset: Dataset, classes: list[str]) -> PredProbs:
    """Read ``path``: a ``.npy`` (rows x classes, in ``classes`` order and the data's row order), or a
    Parquet/CSV table with a ``record_id`` column and one column per class name."""
    n = dataset.num_rows
    if path.suffix.lower() == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read predicted probabilities ({exc})") from None
        if matrix.ndim != 2 or matrix.shape != (n, len(classes)):
            raise InputError(
                f"{path}: predicted probabilities have shape {matrix.shape}; expected ({n}, {len(classes)}): "
                f"one row per record, one column per class in the order {classes[:10]}"
            )
    else:
        matrix = _table_probs(path, dataset, classes)
    matrix = np.asarray(matrix, dtype=np.float64)
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise InputError(f"{path}: predicted probabilities must be finite and non-negative")
    sums = matrix.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise InputError(f"{path}: a row of predicted probabilities sums to zero")
    return PredProbs(matrix / sums, classes, f"file:{path.name}")


def _table_probs(path: Path, dataset: Dataset, classes: list[str]) -> np.ndarray:
    import pyarrow.compute as pc

    from curata.io import read_dataset

    table = read_dataset(path, id_column="record_id").table
    if "record_id" not in table.column_names:
        raise InputError(f"{path}: needs a record_id column and one column per class")
    missing = [c for c in classes if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: no column for class(es) {missing[:5]}; one column per class is needed")
    ids = pc.cast(table.column("record_id"), "string").to_pylist()
    position = {rid: i for i, rid in enumerate(ids)}
    wanted = dataset.record_ids.to_pylist()
    absent = [rid for rid in wanted if rid not in position]
    if absent:
        raise InputError(f"{path}: no predicted probabilities for record(s) {absent[:5]}")
    order = np.array([position[rid] for rid in wanted], dtype=np.int64)
    columns = [np.asarray(pc.cast(table.column(c), "double").to_numpy(zero_copy_only=False)) for c in classes]
    return np.stack(columns, axis=1)[order]


def cross_validated_probs(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    folds: int = 5,
    knn_index: np.ndarray | None = None,
    knn_weight: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold class probabilities for the rows with a label (``labels >= 0``).

    A multinomial logistic regression is trained on ``folds - 1`` folds and predicts the held-out
    fold; when ``knn_index`` (each row's nearest neighbours, row numbers, -1 for none) is given,
    the result is averaged (weight ``knn_weight``) with the smoothed share of each class among the
    neighbours' labels (the row's own label never counts). Rows without a label get NaN.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}")
    n = len(labels)
    out = np.full((n, n_classes), np.nan)
    rows = np.flatnonzero(labels >= 0)
    y = labels[rows]
    counts = np.bincount(y, minlength=n_classes)
    usable_folds = int(min(folds, counts[counts > 0].min())) if len(rows) else 0
    probs = np.full((len(rows), n_classes), 1.0 / n_classes)
    if usable_folds >= 2 and (counts > 0).sum() >= 2:
        splitter = StratifiedKFold(n_splits=usable_folds, shuffle=True, random_state=seed)
        x = np.asarray(vectors[rows], dtype=np.float64)
        for train, test in splitter.split(x, y):
            model = LogisticRegression(max_iter=1000, C=1.0)
            model.fit(x[train], y[train])
            fold_probs = np.zeros((len(test), n_classes))
            fold_probs[:, model.classes_] = model.predict_proba(x[test])
            probs[test] = fold_probs
    if knn_index is not None:
        neighbours = knn_index[rows]
        votes = np.zeros((len(rows), n_classes))
        valid = neighbours >= 0
        neighbour_labels = np.where(valid, labels[np.maximum(neighbours, 0)], -1)
        for c in range(n_classes):
            votes[:, c] = (neighbour_labels == c).sum(axis=1)
        prior = counts / max(counts.sum(), 1)
        vote_probs = (votes + prior) / (votes.sum(axis=1, keepdims=True) + 1.0)
        probs = (1.0 - knn_weight) * probs + knn_weight * vote_probs
    out[rows] = probs / probs.sum(axis=1, keepdims=True)
    return out
