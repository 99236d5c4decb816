"""Find records whose class label is probably wrong, from out-of-sample predicted probabilities.

The approach follows confident learning (Northcutt, Jiang, Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021) for its starting point and replaces its pruning step by a
posterior computed under an explicit noise model.  This is a fresh implementation; no code is shared
with cleanlab.

Model.  Every record has an unknown true class ``c`` and a given (possibly wrong) label ``j`` drawn
with probability ``T[c, j]`` (the *noise matrix*: rows are true classes, each row sums to 1).  A
model's out-of-sample prediction ``p(x)`` is read as a mixture ``sum_c w_c(x) M[c]`` of *profile*
rows ``M[c]``, the prediction a record of true class ``c`` typically gets, with mixture weights
``w(x)`` saying how much ``x`` looks like each true class; ``w(x)`` is the weight vector closest to the
prediction (KL projection onto the mixtures of the rows of ``M``).  The record's given label then
updates it by Bayes' rule::

    P(true = c | x, given = j) = w_c(x) T[c, j] / sum_k w_k(x) T[k, j]

and the probability that the label is wrong is ``1 - P(true = j | x, given = j)``.

Two readings of the predictions are fitted and the one under which the given labels are most
probable is kept (below):

* *noise rows*, ``M = T``: a model that learnt the noisy labels perfectly predicts the noise row of
  the record's true class (sharp predictions, e.g. a deep network trained to convergence);
* *prediction profiles*, ``M[c]`` = the mean prediction of the records of true class ``c`` (estimated
  with the posteriors): a weaker model (e.g. a linear model on embeddings) spreads probability over
  other classes even for clean records, and reading that spread as class membership would keep
  wrong labels.

and a *sharpness* ``g`` from a small grid: the fitted weights are raised to the power ``g`` and
renormalised before the Bayes update (``g = 1`` leaves them as they are), so that the little
probability an imprecise model leaves on a wrong given label is not read as evidence that the label is
right; the order of the weights, and so of the scores, is kept.

Steps.

1. Per-class thresholds ``t_j`` = mean predicted probability of class ``j`` over the records labelled
   ``j``; a record is *confidently* of class ``c`` when ``p_c >= t_c`` (the most probable such class
   when several pass).  Counting (given label, confident class) pairs gives the confident joint, which
   is calibrated so that each given-label row sums to that label's count.  Normalising its columns
   gives the first estimate of ``T``; the mean prediction of the records confidently of each class
   the first estimate of ``M``.
2. For every candidate (reading x sharpness): ``refine_passes`` expectation-maximisation passes, in
   which the posterior of every record's true class is summed per (true class, given label) pair into
   a new ``T`` (and, for profiles, posterior-weighted mean predictions into a new ``M``); then the
   mean log-likelihood of the given labels, ``log sum_c w_c(x) T[c, j]``, scores the candidate.  The
   best-scoring candidate is kept (the selection uses the given labels only, never a truth).  Steps
   1-2 run on at most ``fit_rows`` records (a seeded uniform sample when there are more).
3. One pass over all records computes the posterior with the chosen candidate; a record is flagged
   when the probability its label is wrong exceeds ``threshold`` (default 0.5: more likely wrong than
   right).

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
#: Sharpnesses tried when ``LabelIssueSettings.sharpness`` is None (the label likelihood picks one).
SHARPNESS_GRID = (1.0, 1.5, 2.0, 3.0, 4.0)
#: The candidate is chosen on at least this many rows per class (when the fit rows hold them).
SELECT_ROWS_PER_CLASS = 100
#: Readings of the predictions: the noise rows themselves, or fitted mean prediction profiles.
READINGS = ("noise_rows", "profiles")
#: A row sample is copied once (as float32/float64) when it holds at most this many entries.
_CACHED_ENTRIES = 1 << 24
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
    reading: how predictions relate to true classes: ``noise_rows`` (a record of true class ``c`` is
        predicted about ``T[c]``), ``profiles`` (about the fitted mean prediction of class ``c``), or
        ``auto`` (default: both are fitted, the one under which the given labels are most probable
        is used).
    sharpness: power in [1, 16] the mixture weights are raised to before the Bayes update, or None
        (default: chosen from ``SHARPNESS_GRID`` by the same label likelihood).
    select_rows: at most this many of the fit rows, or ``SELECT_ROWS_PER_CLASS`` per class when that
        is more (a sample drawn with ``seed + 1``), choose the reading and the sharpness; the chosen
        candidate is then fitted on all fit rows.  >= 1.
    """

    threshold: float = 0.5
    refine_passes: int = 2
    solver_iterations: int = 3
    fit_rows: int = 100_000
    chunk_rows: int = 65_536
    seed: int = 0
    reading: str = "auto"
    sharpness: float | None = None
    select_rows: int = 5_000

    def __post_init__(self) -> None:
        t = self.threshold
        if not isinstance(t, (int, float, np.floating)) or isinstance(t, bool) or not 0.0 < float(t) < 1.0:
            raise ConfigError(f"label-issue threshold must be a number in (0, 1), got {t!r}")
        if self.reading not in ("auto", *READINGS):
            raise ConfigError(
                f"label-issue reading must be auto, {' or '.join(READINGS)}, got {self.reading!r}"
            )
        g = self.sharpness
        if g is not None and (
            not isinstance(g, (int, float, np.floating)) or isinstance(g, bool) or not 1.0 <= float(g) <= 16.0
        ):
            raise ConfigError(f"label-issue sharpness must be None or a number in [1, 16], got {g!r}")
        for name, low in (
            ("refine_passes", 0),
            ("solver_iterations", 1),
            ("fit_rows", 1),
            ("chunk_rows", 1),
            ("select_rows", 1),
        ):
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
    profiles: (K, K) float64, the prediction rows the mixture weights were fitted to (row ``c``: the
        prediction of a record of true class ``c``); equal to ``noise_matrix`` for ``noise_rows``.
    reading: the reading used, ``noise_rows`` or ``profiles``.
    sharpness: the power the mixture weights were raised to.
    label_log_likelihood: mean log-probability of the given labels under the chosen candidate, on
        the rows that chose it (at most ``select_rows`` of the fit rows; the fit rows when both are
        fixed by the settings): the figure the reading and sharpness were chosen by.
    """

    is_issue: BoolArray
    score: F64
    suggested_label: I64
    suggested_prob: F64
    noise_matrix: F64
    true_class_prior: F64
    profiles: F64
    reading: str = "noise_rows"
    sharpness: float = 1.0
    label_log_likelihood: float = 0.0

    @property
    def num_issues(self) -> int:
        """Number of flagged records."""
        return int(self.is_issue.sum())

    def ranked_issues(self) -> I64:
        """Row indices of the flagged records, most certain first (ties by row order)."""
        rows = np.flatnonzero(self.is_issue)
        return rows[np.argsort(-self.score[rows], kind="stable")].astype(np.int64)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _power_inplace(w: F64, g: float) -> None:  # pragma: no cover - compiled
    """``w **= g`` for entries in [0, 1], with the grid's powers as plain products (``**`` with a
    float exponent is a slow library call per entry)."""
    k, m = w.shape
    if g == 2.0:
        for c in range(k):
            for b in range(m):
                w[c, b] = w[c, b] * w[c, b]
    elif g == 3.0:
        for c in range(k):
            for b in range(m):
                w[c, b] = w[c, b] * w[c, b] * w[c, b]
    elif g == 4.0:
        for c in range(k):
            for b in range(m):
                v = w[c, b] * w[c, b]
                w[c, b] = v * v
    elif g == 1.5:
        for c in range(k):
            for b in range(m):
                w[c, b] = w[c, b] * np.sqrt(w[c, b])
    else:
        for c in range(k):
            for b in range(m):
                w[c, b] = w[c, b] ** g


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def _posterior_kernel(
    probs: npt.NDArray[np.floating[Any]],
    labels: I64,
    profile: F64,
    ridge: F64,
    noise: F64,
    iterations: int,
    sharpness: float,
    err: F64,
    other: I64,
    other_prob: F64,
    lik: F64,
    bad: npt.NDArray[np.uint8],
    post: F64,
) -> None:  # pragma: no cover - compiled
    """Posterior of the true class of each row; writes P(label wrong), best other class and its prob.

    ``probs`` rows are predicted probabilities (rescaled here to sum to 1; a row with a negative or
    non-finite value or a zero sum gets ``bad[i] = 1``).  The mixture weights are fitted to the rows
    of ``profile`` (``ridge``: the (K, K) ridge pseudo-inverse of ``profile``, their start), raised to
    the power ``sharpness`` and renormalised, then updated by the given label through ``noise``.
    ``lik[i]`` is the probability of row i's given label under the fit, ``sum_c w_c noise[c, y]``.
    When ``post`` has ``probs.shape[0]`` rows the full posterior is written into it too.  Rows are
    handled in blocks stored class-major (``[class, row]``) so that the inner loops run over rows and
    vectorise.
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
        # Multiplicative EM steps towards the KL projection of the row onto mixtures of profile rows
        # (each step keeps sum(w) = 1 since the rows of ``profile`` and ``pr`` sum to 1).
        for _ in range(iterations):
            q[:, :] = 0.0
            for c in range(k):
                for j in range(k):
                    t = profile[c, j]
                    for b in range(m):
                        q[j, b] += w[c, b] * t
            for j in range(k):
                for b in range(m):
                    q[j, b] = pr[j, b] / q[j, b] if q[j, b] > 1e-300 else 0.0
            for c in range(k):
                total[:] = 0.0
                for j in range(k):
                    t = profile[c, j]
                    for b in range(m):
                        total[b] += t * q[j, b]
                for b in range(m):
                    w[c, b] *= total[b]
        if sharpness != 1.0:
            # Sharpen: w_c^g / sum_k w_k^g, computed relative to the largest weight (no underflow).
            total[:] = 0.0
            for c in range(k):
                for b in range(m):
                    total[b] = max(total[b], w[c, b])
            for b in range(m):
                total[b] = 1.0 / total[b] if total[b] > 0.0 else 0.0
            for c in range(k):
                for b in range(m):
                    w[c, b] *= total[b]
            _power_inplace(w, sharpness)
            total[:] = 0.0
            for c in range(k):
                for b in range(m):
                    total[b] += w[c, b]
            for b in range(m):
                total[b] = 1.0 / total[b] if total[b] > 0.0 else 0.0
            for c in range(k):
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
                lik[i] = 1.0
                continue
            y = labels[i]
            s = 0.0
            for c in range(k):
                w[c, b] *= noise[c, y]
                s += w[c, b]
            lik[i] = s
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
    probs: npt.NDArray[np.floating[Any]], labels: I64, thresholds: F64, joint: F64, profile_sums: F64
) -> None:  # pragma: no cover - compiled
    """Count (given label, confident class) pairs: the most probable class at or above its threshold;
    add each such row's normalised prediction to ``profile_sums[confident class]``."""
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
            for j in range(k):
                profile_sums[best, j] += float(probs[i, j]) * inv


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


def _profiles_from_sums(sums: F64) -> F64:
    """Mean prediction per true class from (true class, predicted class) sums, with the same
    pseudo-counts as the noise matrix (a class with no records keeps a diagonal-heavy row)."""
    return _noise_from_joint(sums)


def _ridge_inverse(rows: F64) -> F64:
    """(K, K) matrix R with ``p @ R`` the ridge least-squares mixture weights of ``p`` over ``rows``."""
    k = rows.shape[0]
    r: F64 = rows.T @ np.linalg.inv(rows @ rows.T + _RIDGE * np.eye(k))
    return r


@dataclass(frozen=True)
class _RowSet:
    """Rows of ``probs`` a fit reads: all of them (``index`` None) or the sorted ``index``, with their
    labels.  ``cached`` holds their kernel view when it is small (a sample read once instead of
    gathered again on every pass)."""

    probs: npt.NDArray[np.generic]
    index: I64 | None
    labels: I64
    cached: npt.NDArray[np.floating[Any]] | None = None

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, lo: int, hi: int) -> slice | I64:
        return slice(lo, hi) if self.index is None else self.index[lo:hi]

    def view(self, lo: int, hi: int) -> npt.NDArray[np.floating[Any]]:
        if self.cached is not None:
            return self.cached[lo:hi]
        return _kernel_view(self.probs, self.rows(lo, hi))


def _row_set(probs: npt.NDArray[np.generic], index: I64 | None, labels: I64) -> _RowSet:
    cached = None
    if index is not None and index.size * probs.shape[1] <= _CACHED_ENTRIES:
        cached = _kernel_view(probs, index)
    return _RowSet(probs, index, labels if index is None else labels[index], cached)


def _confident_joint(rs: _RowSet, chunk_rows: int) -> tuple[F64, F64]:
    """Calibrated confident joint of the rows as (true class, given label) counts, and the sums of
    the normalised predictions of the confidently assigned rows per confident class."""
    k = rs.probs.shape[1]
    labels = rs.labels
    parts = _chunks(rs.size, chunk_rows)
    # Per-class thresholds: mean self-confidence of the records given each label.
    sums = np.zeros(k)
    for lo, hi in parts:
        bad = np.empty(hi - lo, dtype=np.uint8)
        _self_confidence_kernel(rs.view(lo, hi), labels[lo:hi], sums, bad)
        _raise_bad_row(rs.probs, bad, rs.rows(lo, hi))
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1.0) - 1e-9, np.inf)

    confident = np.zeros((k, k))  # (given, true)
    profile_sums = np.zeros((k, k))  # (confident class, predicted class)
    for lo, hi in parts:
        _confident_kernel(rs.view(lo, hi), labels[lo:hi], thresholds, confident, profile_sums)
    # Calibrate: each given-label row of the joint sums to that label's count.
    row_sums = confident.sum(axis=1, keepdims=True)
    calibrated = np.where(row_sums > 0, confident / np.maximum(row_sums, 1.0) * counts[:, None], 0.0)
    out: F64 = calibrated.T.copy()
    return out, profile_sums


@dataclass(frozen=True)
class _Fit:
    """One candidate's parameters: projection rows, noise matrix, sharpness, and its (true, given) joint."""

    reading: str
    sharpness: float
    profiles: F64
    noise: F64
    joint: F64
    log_likelihood: float = float("-inf")


def _run_kernel(
    rs: _RowSet, lo: int, hi: int, fit: _Fit, ridge: F64, iterations: int, want_post: bool
) -> tuple[F64, I64, F64, F64, F64]:
    chunk = rs.view(lo, hi)
    m, k = chunk.shape
    err = np.empty(m)
    other = np.empty(m, dtype=np.int64)
    other_prob = np.empty(m)
    lik = np.empty(m)
    bad = np.empty(m, dtype=np.uint8)
    post = np.empty((m, k)) if want_post else np.empty((0, k))
    with _KERNEL_LOCK:
        _posterior_kernel(
            chunk,
            np.ascontiguousarray(rs.labels[lo:hi]),
            fit.profiles,
            ridge,
            fit.noise,
            iterations,
            float(fit.sharpness),
            err,
            other,
            other_prob,
            lik,
            bad,
            post,
        )
    _raise_bad_row(rs.probs, bad, rs.rows(lo, hi))
    return err, other, other_prob, lik, post


def _fit(
    rs: _RowSet,
    reading: str,
    sharpness: float,
    start: tuple[F64, F64],
    cfg: LabelIssueSettings,
    log_likelihood: float | None = None,
) -> _Fit:
    """Fit one candidate on ``rs`` from ``start`` (its confident joint and confident profile sums):
    ``refine_passes`` EM passes, then the mean log-likelihood of the rows' given labels (one more
    pass, skipped when ``log_likelihood`` is given: it is then recorded as it is)."""
    k = rs.probs.shape[1]
    joint, confident_sums = start
    noise = _noise_from_joint(joint)
    profiles = _profiles_from_sums(confident_sums) if reading == "profiles" else noise
    fit = _Fit(reading, sharpness, profiles, noise, joint)
    for step in range(cfg.refine_passes + 1):
        last = step == cfg.refine_passes
        if last and log_likelihood is not None:
            return _Fit(reading, sharpness, fit.profiles, fit.noise, fit.joint, log_likelihood)
        ridge = _ridge_inverse(fit.profiles)
        joint_gt = np.zeros((k, k))  # (given, true)
        profile_sums = np.zeros((k, k))  # (true, predicted)
        log_lik = 0.0
        for lo, hi in _chunks(rs.size, cfg.chunk_rows):
            _, _, _, lik, post = _run_kernel(rs, lo, hi, fit, ridge, cfg.solver_iterations, not last)
            if last:
                log_lik += float(np.log(np.maximum(lik, 1e-300)).sum())
                continue
            onehot = sp.csr_matrix(
                (np.ones(hi - lo), (rs.labels[lo:hi], np.arange(hi - lo))), shape=(k, hi - lo)
            )
            joint_gt += np.asarray(onehot @ post)
            if reading == "profiles":
                chunk = rs.view(lo, hi).astype(np.float64, copy=False)
                profile_sums += post.T @ (chunk / chunk.sum(axis=1, keepdims=True))
        if last:
            return _Fit(reading, sharpness, fit.profiles, fit.noise, fit.joint, log_lik / max(rs.size, 1))
        joint = joint_gt.T.copy()
        noise = _noise_from_joint(joint)
        fit = _Fit(
            reading,
            sharpness,
            _profiles_from_sums(profile_sums) if reading == "profiles" else noise,
            noise,
            joint,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _sample(n: int, size: int, seed: int) -> I64 | None:
    """A sorted seeded uniform sample of ``size`` of ``range(n)``, or None when ``n <= size``."""
    if n <= size:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


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
            profiles=np.eye(k),
        )

    candidates = [
        (reading, float(g))
        for reading in (READINGS if cfg.reading == "auto" else (cfg.reading,))
        for g in (SHARPNESS_GRID if cfg.sharpness is None else (cfg.sharpness,))
    ]
    fit_index = _sample(n, cfg.fit_rows, cfg.seed)
    fit_set = _row_set(probs, fit_index, lab)
    fit_start = _confident_joint(fit_set, cfg.chunk_rows)
    if len(candidates) == 1:
        best = _fit(fit_set, *candidates[0], fit_start, cfg)
    else:
        # Choose the candidate on at most ``select_rows`` of the fit rows, then refit it on all of them.
        pick = _sample(fit_set.size, max(cfg.select_rows, SELECT_ROWS_PER_CLASS * k), cfg.seed + 1)
        select_index = pick if fit_index is None or pick is None else fit_index[pick]
        if pick is None:
            select_set, select_start = fit_set, fit_start
        else:
            select_set = _row_set(probs, select_index, lab)
            select_start = _confident_joint(select_set, cfg.chunk_rows)
        chosen: _Fit | None = None
        for reading, g in candidates:
            fit = _fit(select_set, reading, g, select_start, cfg)
            # Strictly better only: ties keep the earlier (simpler) candidate.
            if chosen is None or fit.log_likelihood > chosen.log_likelihood:
                chosen = fit
        assert chosen is not None
        if pick is not None:
            best = _fit(fit_set, chosen.reading, chosen.sharpness, fit_start, cfg, chosen.log_likelihood)
        else:
            best = chosen

    ridge = _ridge_inverse(best.profiles)
    all_set = _RowSet(probs, None, lab)
    score = np.empty(n)
    other = np.empty(n, dtype=np.int64)
    other_prob = np.empty(n)
    for lo, hi in _chunks(n, cfg.chunk_rows):
        e, o, op, _, _ = _run_kernel(all_set, lo, hi, best, ridge, cfg.solver_iterations, False)
        score[lo:hi] = e
        other[lo:hi] = o
        other_prob[lo:hi] = op

    is_issue = score > cfg.threshold
    own_prob = 1.0 - score
    # Most probable class: the given one unless another beats it; a flagged record gets the best other.
    use_other = is_issue | (other_prob > own_prob)
    suggested = np.where(use_other, other, lab)
    suggested_prob = np.where(use_other, other_prob, own_prob)
    prior_counts = best.joint.sum(axis=1)
    prior = prior_counts / prior_counts.sum() if prior_counts.sum() > 0 else np.full(k, 1.0 / k)
    return LabelIssues(
        is_issue=is_issue,
        score=score,
        suggested_label=suggested.astype(np.int64),
        suggested_prob=suggested_prob,
        noise_matrix=best.noise,
        true_class_prior=prior,
        profiles=best.profiles,
        reading=best.reading,
        sharpness=best.sharpness,
        label_log_likelihood=best.log_likelihood,
    )
