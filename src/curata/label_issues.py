"""Find records whose class label is probably wrong, from out-of-sample predicted probabilities.

The approach follows confident learning (Northcutt, Jiang, Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021) for its starting point and replaces its pruning step by a
posterior computed under an explicit noise model.  This is a fresh implementation; no code is shared
with cleanlab.

Model.  Every record has an unknown true class ``c`` and a given (possibly wrong) label ``j`` drawn
with probability ``T[c, j]`` (the *noise matrix*: rows are true classes, each row sums to 1).  A model
trained on the given labels and applied out of sample predicts ``p(j | x)``, which under the model is
the mixture ``sum_c pi_c(x) T[c, j]`` of the noise rows, weighted by how much ``x`` looks like each
true class.  Given ``T`` and a record's predicted probabilities, ``pi(x)`` is the mixture weight vector
closest to the prediction (the KL projection onto the mixtures of the rows of ``T``); the record's
given label then updates it by Bayes' rule::

    P(true = c | x, given = j) = pi_c(x) T[c, j] / sum_k pi_k(x) T[k, j]

and the probability that the label is wrong is ``1 - P(true = j | x, given = j)``.

Steps.

1. Per-class thresholds ``t_j`` = mean predicted probability of class ``j`` over the records labelled
   ``j``; a record is *confidently* of class ``c`` when ``p_c >= t_c`` (the most probable such class
   when several pass).  Counting (given label, confident class) pairs gives the confident joint, which
   is calibrated so that each given-label row sums to that label's count.  Normalising its columns
   gives the first estimate of ``T``.
2. ``refine_passes`` expectation-maximisation passes: the posterior of every record's true class
   (above) is summed per (true class, given label) pair and renormalised into a new ``T``.  Steps 1-2
   run on at most ``fit_rows`` records (a seeded uniform sample when there are more).
3. One pass over all records computes the posterior with the final ``T``; a record is flagged when the
   probability its label is wrong exceeds ``threshold`` (default 0.5: more likely wrong than right).

Per-record work is a few small ``K x K`` products (the mixture weights are solved by a ridge
least-squares start and ``solver_iterations`` multiplicative EM steps) in a numba kernel that runs on
all cores.  Records are processed ``chunk_rows`` at a time: only one chunk is ever held as float64, so
a float16 ``(n, K)`` input is never copied whole.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from curata.errors import ConfigError, InputError

__all__ = ["LabelIssueSettings", "LabelIssues", "find_label_issues"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Pseudo-counts added to every (true, given) count before ``T`` is normalised: one record per class
#: on the diagonal (a class nobody is confidently in keeps a sensible row) and a tiny floor elsewhere.
_DIAGONAL_PRIOR = 1.0
_FLOOR_PRIOR = 1e-3
#: Ridge weight of the least-squares start of the mixture weights, and the uniform mass mixed into it so
#: that the multiplicative EM steps can move every class.
_RIDGE = 0.01
_START_MIX = 0.05
#: LLVM fast-math flags of the posterior kernel: contraction and reassociation, but not "no NaN / no
#: inf", which would let the compiler drop the input checks.
_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
#: Rows per numba work block (each block allocates its scratch vectors once).
_BLOCK = 256
#: Serialises calls of the parallel kernel: numba's fallback "workqueue" threading layer must not be
#: entered from two Python threads at once.
_KERNEL_LOCK = threading.Lock()


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class LabelIssueSettings:
    """Settings of :func:`find_label_issues`; every field is checked when the object is made.

    threshold: flag a record when the estimated probability that its label is wrong exceeds this,
        in (0, 1).  0.5 flags records more likely wrong than right; lower it for recall.
    refine_passes: EM passes that re-estimate the noise matrix from the posteriors (>= 0; 0 keeps the
        calibrated confident-joint estimate).
    solver_iterations: multiplicative EM steps that fit each record's mixture weights (>= 1).
    fit_rows: at most this many records (a uniform sample drawn with ``seed``) estimate the noise
        matrix; every record is scored.  >= 1.
    chunk_rows: records converted to float64 and processed at a time (memory bound), >= 1.
    seed: seed of the ``fit_rows`` sample (only used when there are more records than ``fit_rows``).
    """

    threshold: float = 0.5
    refine_passes: int = 2
    solver_iterations: int = 3
    fit_rows: int = 100_000
    chunk_rows: int = 65_536
    seed: int = 0

    def __post_init__(self) -> None:
        t = self.threshold
        if not isinstance(t, (int, float, np.floating)) or isinstance(t, bool) or not 0.0 < float(t) < 1.0:
            raise ConfigError(f"label-issue threshold must be a number in (0, 1), got {t!r}")
        for name, low in (("refine_passes", 0), ("solver_iterations", 1), ("fit_rows", 1), ("chunk_rows", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"label-issue {name} must be an integer >= {low}, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"label-issue seed must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class LabelIssues:
    """What :func:`find_label_issues` found, one entry per record (row order of the input).

    is_issue: bool, the label is probably wrong (``score > threshold``).
    score: float64 in [0, 1], the estimated probability that the given label is wrong; sort by it
        (descending) to review the most certain errors first.
    suggested_label: int64, the most probable true class; for a flagged record, the most probable
        class other than the given one.
    suggested_prob: float64, the posterior probability of ``suggested_label``.
    noise_matrix: (K, K) float64 estimate of P(given label = j | true class = c), rows = true class.
    true_class_prior: (K,) float64 estimate of the true-class frequencies.
    """

    is_issue: BoolArray
    score: F64
    suggested_label: I64
    suggested_prob: F64
    noise_matrix: F64
    true_class_prior: F64

    @property
    def num_issues(self) -> int:
        """Number of flagged records."""
        return int(self.is_issue.sum())

    def ranked_issues(self) -> I64:
        """Row indices of the flagged records, most certain first (ties by row order)."""
        rows = np.flatnonzero(self.is_issue)
        return rows[np.argsort(-self.score[rows], kind="stable")].astype(np.int64)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def _posterior_kernel(
    probs: npt.NDArray[np.floating[Any]],
    labels: I64,
    noise: F64,
    ridge: F64,
    iterations: int,
    err: F64,
    other: I64,
    other_prob: F64,
    bad: npt.NDArray[np.uint8],
    post: F64,
) -> None:  # pragma: no cover - compiled
    """Posterior of the true class of each row; writes P(label wrong), best other class and its prob.

    ``probs`` rows are predicted probabilities (rescaled here to sum to 1; a row with a negative or
    non-finite value or a zero sum gets ``bad[i] = 1``), ``noise`` the (K, K) noise matrix, ``ridge``
    the (K, K) ridge pseudo-inverse of ``noise`` (start of the mixture weights).  When ``post`` has
    ``probs.shape[0]`` rows the full posterior is written into it too.  Rows are handled in blocks
    stored class-major (``[class, row]``) so that the inner loops run over rows and vectorise.
    """
    n, k = probs.shape
    keep_post = post.shape[0] == n
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for blk in numba.prange(n_blocks):
        start = blk * _BLOCK
        m = min(n, start + _BLOCK) - start
        pr = np.zeros((k, m))
        w = np.zeros((k, m))
        q = np.zeros((k, m))
        total = np.zeros(m)
        okay = np.ones(m, dtype=np.bool_)
        for b in range(m):
            for j in range(k):
                v = float(probs[start + b, j])
                if not (v >= 0.0 and v < np.inf):  # also catches NaN
                    okay[b] = False
                    v = 0.0
                pr[j, b] = v
                total[b] += v
        for b in range(m):
            if not total[b] > 0.0:
                okay[b] = False
            total[b] = 1.0 / total[b] if okay[b] else 0.0
        for j in range(k):
            for b in range(m):
                pr[j, b] *= total[b]
        # Ridge least-squares start, clipped to the simplex and mixed with the uniform vector.
        for c in range(k):
            for j in range(k):
                r = ridge[j, c]
                for b in range(m):
                    w[c, b] += pr[j, b] * r
        total[:] = 0.0
        for c in range(k):
            for b in range(m):
                if w[c, b] < 0.0:
                    w[c, b] = 0.0
                total[b] += w[c, b]
        for b in range(m):
            if total[b] > 0.0:
                scale = (1.0 - _START_MIX) / total[b]
                for c in range(k):
                    w[c, b] = w[c, b] * scale + _START_MIX / k
            else:
                for c in range(k):
                    w[c, b] = 1.0 / k
        # Multiplicative EM steps towards the KL projection of the row onto mixtures of noise rows
        # (each step keeps sum(w) = 1 since the rows of ``noise`` and ``pr`` sum to 1).
        for _ in range(iterations):
            q[:, :] = 0.0
            for c in range(k):
                for j in range(k):
                    t = noise[c, j]
                    for b in range(m):
                        q[j, b] += w[c, b] * t
            for j in range(k):
                for b in range(m):
                    q[j, b] = pr[j, b] / q[j, b] if q[j, b] > 1e-300 else 0.0
            for c in range(k):
                total[:] = 0.0
                for j in range(k):
                    t = noise[c, j]
                    for b in range(m):
                        total[b] += t * q[j, b]
                for b in range(m):
                    w[c, b] *= total[b]
        # Bayes update with the given label, per row.
        for b in range(m):
            i = start + b
            bad[i] = 0 if okay[b] else 1
            if not okay[b]:
                err[i] = 0.0
                other[i] = 0
                other_prob[i] = 0.0
                continue
            y = labels[i]
            s = 0.0
            for c in range(k):
                w[c, b] *= noise[c, y]
                s += w[c, b]
            if s > 0.0:
                s = 1.0 / s
                for c in range(k):
                    w[c, b] *= s
            else:
                for c in range(k):
                    w[c, b] = 1.0 / k
            best = -1
            best_p = -1.0
            for c in range(k):
                if c != y and w[c, b] > best_p:
                    best = c
                    best_p = w[c, b]
            err[i] = min(1.0, max(0.0, 1.0 - w[y, b]))
            other[i] = best
            other_prob[i] = best_p
            if keep_post:
                for c in range(k):
                    post[i, c] = w[c, b]


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _self_confidence_kernel(
    probs: npt.NDArray[np.floating[Any]], labels: I64, sums: F64, bad: npt.NDArray[np.uint8]
) -> None:  # pragma: no cover - compiled
    """Add each row's normalised probability of its given label to ``sums[label]``; flag bad rows."""
    n, k = probs.shape
    for i in range(n):
        total = 0.0
        ok = True
        for j in range(k):
            v = float(probs[i, j])
            if not (v >= 0.0 and v < np.inf):
                ok = False
            total += v
        if not ok or not total > 0.0:
            bad[i] = 1
            continue
        bad[i] = 0
        sums[labels[i]] += np.float64(probs[i, labels[i]]) / total


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _confident_kernel(
    probs: npt.NDArray[np.floating[Any]], labels: I64, thresholds: F64, joint: F64
) -> None:  # pragma: no cover - compiled
    """Count (given label, confident class) pairs: the most probable class at or above its threshold."""
    n, k = probs.shape
    for i in range(n):
        total = 0.0
        for j in range(k):
            total += float(probs[i, j])
        inv = 1.0 / total
        best = -1
        best_p = -1.0
        for j in range(k):
            v = float(probs[i, j]) * inv
            if v >= thresholds[j] and v > best_p:
                best = j
                best_p = v
        if best >= 0:
            joint[labels[i], best] += 1.0


def _check_labels(labels: npt.ArrayLike, n: int, k: int) -> I64:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(f"labels must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"labels has {arr.shape[0]} entries but pred_probs has {n} rows")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"labels must be integer class indices; row {row} holds {arr[row]!r}")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"labels must be integer class indices, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=False)
    if n:
        bad = (out < 0) | (out >= k)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"labels must lie in [0, {k - 1}] (pred_probs has {k} columns); row {row} holds {out[row]}"
            )
    return out


def _check_probs(pred_probs: npt.ArrayLike) -> npt.NDArray[np.generic]:
    arr = np.asarray(pred_probs)
    if arr.ndim != 2:
        raise InputError(f"pred_probs must be a 2-D (records, classes) array, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"pred_probs must hold real numbers, got dtype {arr.dtype}")
    if arr.shape[1] < 2:
        raise InputError(f"pred_probs needs at least 2 class columns, got {arr.shape[1]}")
    return arr


def _kernel_view(probs: npt.NDArray[np.generic], rows: slice | I64) -> npt.NDArray[np.floating[Any]]:
    """The selected rows as a C-contiguous float32/float64 array (a view when no conversion is needed)."""
    chunk = probs[rows]
    if chunk.dtype not in (np.float32, np.float64):
        # float16 widens exactly to float32; integers and other floats go to float64.
        chunk = chunk.astype(np.float32 if chunk.dtype == np.float16 else np.float64)
    return np.ascontiguousarray(chunk)


def _raise_bad_row(probs: npt.NDArray[np.generic], bad: npt.NDArray[np.uint8], rows: slice | I64) -> None:
    if not bad.any():
        return
    at = int(np.flatnonzero(bad)[0])
    row = int(rows[at]) if isinstance(rows, np.ndarray) else int(rows.start or 0) + at
    raise InputError(
        f"pred_probs row {row} is not a probability vector (negative, non-finite or all-zero values): "
        f"{np.asarray(probs[row]).tolist()}"
    )


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def _noise_from_joint(joint_true_given: F64) -> F64:
    """Row-normalise a (true, given) count matrix after adding the pseudo-counts."""
    k = joint_true_given.shape[0]
    smoothed = joint_true_given + _FLOOR_PRIOR + _DIAGONAL_PRIOR * np.eye(k)
    noise: F64 = smoothed / smoothed.sum(axis=1, keepdims=True)
    return noise


def _ridge_inverse(noise: F64) -> F64:
    """(K, K) matrix R with ``p @ R`` the ridge least-squares mixture weights of ``p`` over noise rows."""
    k = noise.shape[0]
    r: F64 = noise.T @ np.linalg.inv(noise @ noise.T + _RIDGE * np.eye(k))
    return r


def _fit_rows(sample: I64 | None, lo: int, hi: int) -> slice | I64:
    return slice(lo, hi) if sample is None else sample[lo:hi]


def _confident_joint(probs: npt.NDArray[np.generic], labels: I64, sample: I64 | None, chunk_rows: int) -> F64:
    """Calibrated confident joint of the fit rows, as (true class, given label) counts.

    ``labels`` are the fit rows' labels (already subset by ``sample``).
    """
    k = probs.shape[1]
    parts = _chunks(labels.shape[0], chunk_rows)
    # Per-class thresholds: mean self-confidence of the records given each label.
    sums = np.zeros(k)
    for lo, hi in parts:
        rows = _fit_rows(sample, lo, hi)
        bad = np.empty(hi - lo, dtype=np.uint8)
        _self_confidence_kernel(_kernel_view(probs, rows), labels[lo:hi], sums, bad)
        _raise_bad_row(probs, bad, rows)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1.0) - 1e-9, np.inf)

    confident = np.zeros((k, k))  # (given, true)
    for lo, hi in parts:
        rows = _fit_rows(sample, lo, hi)
        _confident_kernel(_kernel_view(probs, rows), labels[lo:hi], thresholds, confident)
    # Calibrate: each given-label row of the joint sums to that label's count.
    row_sums = confident.sum(axis=1, keepdims=True)
    calibrated = np.where(row_sums > 0, confident / np.maximum(row_sums, 1.0) * counts[:, None], 0.0)
    out: F64 = calibrated.T.copy()
    return out


def _run_kernel(
    probs: npt.NDArray[np.generic],
    rows: slice | I64,
    labels: I64,
    noise: F64,
    ridge: F64,
    iterations: int,
    want_post: bool,
) -> tuple[F64, I64, F64, F64]:
    chunk = _kernel_view(probs, rows)
    m, k = chunk.shape
    err = np.empty(m)
    other = np.empty(m, dtype=np.int64)
    other_prob = np.empty(m)
    bad = np.empty(m, dtype=np.uint8)
    post = np.empty((m, k)) if want_post else np.empty((0, k))
    with _KERNEL_LOCK:
        _posterior_kernel(
            chunk, np.ascontiguousarray(labels), noise, ridge, iterations, err, other, other_prob, bad, post
        )
    _raise_bad_row(probs, bad, rows)
    return err, other, other_prob, post


def find_label_issues(
    labels: npt.ArrayLike, pred_probs: npt.ArrayLike, settings: LabelIssueSettings | None = None
) -> LabelIssues:
    """Flag records whose given label is probably wrong and rank all records by that probability.

    ``labels``: (n,) integer class indices in ``[0, K)``.  ``pred_probs``: (n, K) out-of-sample
    predicted probabilities (e.g. from cross-validation), any float dtype (float16 included); each row
    is rescaled to sum to 1, so rows that sum to 0.999 after rounding are fine.  Raises
    :class:`~curata.errors.InputError` for malformed inputs (wrong shapes, labels out of range,
    negative or non-finite probabilities, all-zero rows).  See the module docstring for the method.
    """
    cfg = settings if settings is not None else LabelIssueSettings()
    if not isinstance(cfg, LabelIssueSettings):
        raise ConfigError(f"settings must be a LabelIssueSettings, got {type(cfg).__name__}")
    probs = _check_probs(pred_probs)
    n, k = probs.shape
    lab = _check_labels(labels, n, k)
    if n == 0:
        return LabelIssues(
            is_issue=np.zeros(0, dtype=np.bool_),
            score=np.zeros(0),
            suggested_label=np.zeros(0, dtype=np.int64),
            suggested_prob=np.zeros(0),
            noise_matrix=np.eye(k),
            true_class_prior=np.full(k, 1.0 / k),
        )

    sample: I64 | None = None
    if n > cfg.fit_rows:
        rng = np.random.default_rng(cfg.seed)
        sample = np.sort(rng.choice(n, size=cfg.fit_rows, replace=False)).astype(np.int64)
    fit_labels = lab if sample is None else lab[sample]
    n_fit = fit_labels.shape[0]

    joint = _confident_joint(probs, fit_labels, sample, cfg.chunk_rows)
    noise = _noise_from_joint(joint)
    for _ in range(cfg.refine_passes):
        ridge = _ridge_inverse(noise)
        joint_t = np.zeros((k, k))  # (given, true)
        for lo, hi in _chunks(n_fit, cfg.chunk_rows):
            _, _, _, post = _run_kernel(
                probs, _fit_rows(sample, lo, hi), fit_labels[lo:hi], noise, ridge, cfg.solver_iterations, True
            )
            onehot = sp.csr_matrix(
                (np.ones(hi - lo), (fit_labels[lo:hi], np.arange(hi - lo))), shape=(k, hi - lo)
            )
            joint_t += np.asarray(onehot @ post)
        joint = joint_t.T.copy()
        noise = _noise_from_joint(joint)

    ridge = _ridge_inverse(noise)
    score = np.empty(n)
    other = np.empty(n, dtype=np.int64)
    other_prob = np.empty(n)
    for lo, hi in _chunks(n, cfg.chunk_rows):
        e, o, op, _ = _run_kernel(
            probs, slice(lo, hi), lab[lo:hi], noise, ridge, cfg.solver_iterations, False
        )
        score[lo:hi] = e
        other[lo:hi] = o
        other_prob[lo:hi] = op

    is_issue = score > cfg.threshold
    own_prob = 1.0 - score
    # Most probable class: the given one unless another beats it; a flagged record gets the best other.
    use_other = is_issue | (other_prob > own_prob)
    suggested = np.where(use_other, other, lab)
    suggested_prob = np.where(use_other, other_prob, own_prob)
    prior_counts = joint.sum(axis=1)
    prior = prior_counts / prior_counts.sum() if prior_counts.sum() > 0 else np.full(k, 1.0 / k)
    return LabelIssues(
        is_issue=is_issue,
        score=score,
        suggested_label=suggested.astype(np.int64),
        suggested_prob=suggested_prob,
        noise_matrix=noise,
        true_class_prior=prior,
    )
