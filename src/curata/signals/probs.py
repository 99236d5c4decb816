"""Out-of-sample predicted class probabilities: the user's (``--pred-probs``) or made by curata.

curata makes them without a model from the user: a K-fold cross-validated logistic regression on
the embeddings, averaged with a leave-one-out vote of the nearest neighbours' labels. No record is
scored by a model that saw its label. The regularisation of the regression and the weight of the
vote are chosen by the out-of-sample log-loss of the given labels (see ``cross_validated_probs``).
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


#: Inverse regularisation strengths tried for the logistic regression (features scaled to unit RMS
#: row norm, so the grid does not depend on the encoder's scale).
C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0)
#: Weights of the neighbours' vote in the average with the regression, tried in this order.
KNN_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Probability floor of the log-loss that chooses C and the vote weight.
_LOG_FLOOR = 1e-6


def _features(vectors: np.ndarray, max_dims: int, seed: int) -> np.ndarray:
    """Centred vectors, projected on their top ``max_dims`` principal components when wider, and
    scaled to unit root-mean-square row norm (float64)."""
    x = np.asarray(vectors, dtype=np.float32)
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    if x.shape[1] > max_dims and x.shape[0] > max_dims:
        from sklearn.decomposition import PCA

        x = PCA(max_dims, svd_solver="randomized", random_state=seed).fit_transform(x)
    out = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt((out * out).sum(axis=1).mean())) if len(out) else 0.0
    if rms > 0:
        out /= rms
    return out


def _usable_folds(y: np.ndarray, folds: int) -> int:
    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        return 0
    return int(min(folds, present.min()))


def _out_of_fold(x: np.ndarray, y: np.ndarray, n_classes: int, c: float, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of a multinomial logistic regression with inverse strength ``c``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    probs = np.full((len(y), n_classes), 1.0 / n_classes)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        if len(np.unique(y[train])) < 2:
            continue
        model = LogisticRegression(max_iter=1000, C=c)
        model.fit(x[train], y[train])
        fold_probs = np.zeros((len(test), n_classes))
        fold_probs[:, model.classes_] = model.predict_proba(x[test])
        probs[test] = fold_probs
    return probs


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(y)), y], _LOG_FLOOR)).mean())


def _choose_c(x: np.ndarray, y: np.ndarray, n_classes: int, select_rows: int, seed: int) -> float:
    """The grid value with the lowest 3-fold out-of-sample log-loss on at most ``select_rows`` rows."""
    rows = np.arange(len(y))
    if len(rows) > select_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=select_rows, replace=False))
    folds = _usable_folds(y[rows], 3)
    if folds < 2:
        return 4.0
    losses = [_log_loss(_out_of_fold(x[rows], y[rows], n_classes, c, folds, seed), y[rows]) for c in C_GRID]
    return C_GRID[int(np.argmin(losses))]


def cross_validated_probs(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    folds: int = 5,
    knn_index: np.ndarray | None = None,
    knn_weight: float | None = None,
    seed: int = 0,
    max_dims: int = 256,
    select_rows: int = 3000,
) -> np.ndarray:
    """Out-of-fold class probabilities for the rows with a label (``labels >= 0``).

    Features: the vectors centred, projected on their top ``max_dims`` principal components when
    wider (unsupervised), scaled to unit root-mean-square row norm. A multinomial logistic
    regression is trained on ``folds - 1`` folds and predicts the held-out fold; its inverse
    regularisation ``C`` is the value of ``C_GRID`` with the lowest 3-fold out-of-sample log-loss of
    the given labels on at most ``select_rows`` rows (a seeded sample). When ``knn_index`` (each row's
    nearest neighbours, row numbers, -1 for none) is given, the result is averaged with the smoothed
    share of each class among the neighbours' labels (the row's own label never counts), with weight
    ``knn_weight``, or when None the weight of ``KNN_WEIGHTS`` whose average has the lowest log-loss
    of the given labels (both parts are out of sample). Label noise makes this log-loss higher but
    does not change which model predicts the true classes best, as long as the noise does not depend
    on the content. The fits run with single-threaded BLAS (small matrices; threads contend on a busy
    machine). Rows without a label get NaN.
    """
    from threadpoolctl import threadpool_limits

    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}")
    if knn_weight is not None and not 0.0 <= knn_weight <= 1.0:
        raise ConfigError(f"knn_weight must be in [0, 1], got {knn_weight}")
    n = len(labels)
    out = np.full((n, n_classes), np.nan)
    rows = np.flatnonzero(labels >= 0)
    y = labels[rows]
    counts = np.bincount(y, minlength=n_classes)
    usable_folds = _usable_folds(y, folds) if len(rows) else 0
    probs = np.full((len(rows), n_classes), 1.0 / n_classes)
    fitted = usable_folds >= 2
    if fitted:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        x = _features(vectors[rows], max_dims, seed)
        with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            c = _choose_c(x, y, n_classes, select_rows, seed)
            probs = _out_of_fold(x, y, n_classes, c, usable_folds, seed)
    if knn_index is not None:
        neighbours = knn_index[rows]
        votes = np.zeros((len(rows), n_classes))
        valid = neighbours >= 0
        neighbour_labels = np.where(valid, labels[np.maximum(neighbours, 0)], -1)
        for cls in range(n_classes):
            votes[:, cls] = (neighbour_labels == cls).sum(axis=1)
        prior = counts / max(counts.sum(), 1)
        vote_probs = (votes + prior) / (votes.sum(axis=1, keepdims=True) + 1.0)
        if knn_weight is not None:
            weights: tuple[float, ...] = (knn_weight,)
        else:
            weights = KNN_WEIGHTS if fitted else (1.0,)
        blends = [(1.0 - w) * probs + w * vote_probs for w in weights]
        probs = blends[int(np.argmin([_log_loss(b, y) for b in blends]))] if len(blends) > 1 else blends[0]
    out[rows] = probs / probs.sum(axis=1, keepdims=True)
    return out
