"""Semantic near duplicates: every pair of embeddings at or above a cosine similarity, found exactly.

The method is SemDeDup's (cluster the embeddings with k-means, compare rows inside clusters) made exact
by a provable bound on the pairs that straddle a cluster boundary, with a second provable bound that
discards almost every compared pair at a fraction of the cost of its full dot product.

Setting.  Rows are normalised to unit length, so ``cos(x, y) >= t`` is the same as
``||x - y|| <= eps`` with ``eps = sqrt(2 - 2t)``.  Each row gets a label, the centroid with the largest
inner product.

Boundary bound (which clusters to compare).  For rows x labelled p and y labelled q != p, let
``w = c_p - c_q`` and ``h_x(q) = (<x, c_p> - <x, c_q>) / ||w||``, the distance of x from the hyperplane
``<z, w> = 0`` that separates p's rows from q's.  Then ``<x - y, w> = ||w|| (h_x(q) + h_y(p))`` and, by
Cauchy-Schwarz, ``h_x(q) + h_y(p) <= ||x - y||``.  A pair within ``eps`` thus has ``h_x(q) <= eps / 2``
or ``h_y(p) <= eps / 2``: one of its rows lies in the *halo* of the other's cluster (the rows of other
clusters within ``eps / 2`` of the shared boundary).  Comparing each cluster's members with each other
and with its halo finds every pair.  The identity holds for any labels and centroids, so a poor k-means
result costs time, never pairs.

Projection bound (which compared pairs to verify).  With an orthonormal basis V of the top principal
directions (``project_dims`` of them, from the k-means sample), ``<x, y> = <V'x, V'y> + <r_x, r_y> <=
<V'x, V'y> + ||r_x|| ||r_y||`` where ``r`` is the part of a row outside span(V).  Appending ``||r_x||``
to ``V'x`` makes that bound a single inner product of (project_dims + 1)-dimensional rows, so each
cluster block is screened with one small matrix product; only pairs whose bound reaches the threshold
(typically well under 0.1% of them) get their full dot product.

Cost.  On 100k x 384 sentence-like embeddings with ~sqrt(n) clusters, members plus halos are about 5%
of all pairs at cosine 0.95 (under 2% at 0.99), screened in 65 rather than 384 dimensions; with the
k-means fit and one (n x k) assignment product the whole search is ~30x faster than a blocked
all-pairs product (benchmarks/bench_semantic_dups.py).  Nothing of size n x n is formed: products
run one cluster block of at most ``block_rows`` x ``block_rows`` at a time.

Floating point.  Products run in float32.  Every bound carries a slack larger than float32's worst-case
rounding error, so rounding cannot drop a pair; pairs whose float32 cosine lies within that slack of the
threshold are decided again in float64 (from the float32 unit rows).  The result is the set of pairs
whose float64 cosine of those unit rows is ``>= min_cosine``, whatever the clustering or seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from curata.errors import ConfigError, InputError

__all__ = [
    "SemanticDupSettings",
    "cross_semantic_pairs",
    "normalize_rows",
    "semantic_duplicate_pairs",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
_T = TypeVar("_T")
_R = TypeVar("_R")

#: Below this many rows the default is one cluster (a plain blocked all-pairs product).
_SMALL = 2048
#: Rows gathered at once when verifying candidate pairs.
_VERIFY_CHUNK = 16_384


@dataclass(frozen=True)
class SemanticDupSettings:
    """How :func:`semantic_duplicate_pairs` and :func:`cross_semantic_pairs` search.

    Only ``min_cosine`` changes the result; every other field changes speed and memory only (the
    search is exact for any clustering and projection).

    * ``min_cosine``: pairs whose cosine similarity is at or above this are reported, in (0, 1].
    * ``n_clusters``: k-means clusters; None picks ``round(sqrt(n))``, or 1 below 2,048 rows (where a
      plain blocked all-pairs product is as fast).  More clusters shrink within-cluster work and grow
      the halos and the k-means and assignment cost.
    * ``seed``: seeds the k-means sample and initial centroids.
    * ``kmeans_iters``: Lloyd iterations of spherical k-means.
    * ``kmeans_sample``: k-means (and the principal directions) are fitted on this many rows drawn at
      random (at least 32 per cluster); every row is then assigned once.
    * ``project_dims``: principal directions of the screening bound (0 turns screening off; ignored
      when it is not below half the embedding width).
    * ``block_rows``: rows per matrix-product block; temporary memory is about
      ``workers x block_rows x max(block_rows, n_clusters)`` float32 values (64 MiB per worker at
      the default), beside a float32 unit-row copy of the input, the (n, project_dims + 1)
      screening rows, the halo lists and the pairs found.
    * ``workers``: threads that run the matrix products, each with single-threaded BLAS (None = the
      CPUs this process may use).  Small products scale better this way than with threaded BLAS.
    """

    min_cosine: float = 0.95
    n_clusters: int | None = None
    seed: int = 0
    kmeans_iters: int = 6
    kmeans_sample: int = 10_000
    project_dims: int = 64
    block_rows: int = 4096
    workers: int | None = None

    def __post_init__(self) -> None:
        """Reject values the search cannot use, naming the field and the allowed range."""
        mc = self.min_cosine
        if (
            isinstance(mc, bool)
            or not isinstance(mc, int | float | np.floating | np.integer)
            or not math.isfinite(float(mc))
            or not 0.0 < float(mc) <= 1.0
        ):
            raise ConfigError(f"SemanticDupSettings.min_cosine must be a number in (0, 1], got {mc!r}")
        k = self.n_clusters
        if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
            raise ConfigError(f"SemanticDupSettings.n_clusters must be None or an integer >= 1, got {k!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
            raise ConfigError(f"SemanticDupSettings.seed must be an integer in [0, 2**63), got {seed!r}")
        for name, low in (("kmeans_iters", 0), ("kmeans_sample", 1), ("project_dims", 0), ("block_rows", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(f"SemanticDupSettings.{name} must be an integer >= {low}, got {value!r}")
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 1):
            raise ConfigError(f"SemanticDupSettings.workers must be None or an integer >= 1, got {w!r}")

    def worker_count(self) -> int:
        """Return the number of threads used (``workers``, or the CPUs this process may use)."""
        if self.workers is not None:
            return int(self.workers)
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)

    def clusters_for(self, n: int) -> int:
        """Return the number of clusters used for ``n`` rows (at least 1, never more than ``n``)."""
        if self.n_clusters is not None:
            return max(1, min(int(self.n_clusters), n))
        if n < _SMALL:
            return 1
        return max(1, min(n, round(math.sqrt(n))))


# ---------------------------------------------------------------------------------------------------
# Input checks and normalisation


def normalize_rows(embeddings: npt.ArrayLike, name: str = "embeddings") -> tuple[F32, B]:
    """Return ``(rows scaled to unit length as float32, mask of non-zero rows)``.

    ``embeddings`` must be an (n, d) array of finite real numbers with d >= 1; all-zero rows stay zero
    (and never match anything).  Raises InputError naming ``name`` otherwise.
    """
    try:
        arr = np.asarray(embeddings)
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like
        raise InputError(f"{name} must be a 2-D numeric array: {exc}") from exc
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (rows, dims) array, got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise InputError(f"{name} must have at least one column, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(arr, dtype=np.float32)
        sq = np.einsum("ij,ij->i", x32, x32).astype(np.float64)
    odd = np.flatnonzero(~np.isfinite(sq) | (sq < 1e-30))
    if odd.size:  # NaN/inf, squares that overflow or underflow float32: redo those rows in float64
        rows = x32[odd].astype(np.float64)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            bad = int(odd[np.flatnonzero(~finite)[0]])
            raise InputError(f"{name} must be finite: row {bad} holds NaN or inf (or a value beyond float32)")
        sq[odd] = np.einsum("ij,ij->i", rows, rows)
    norms = np.sqrt(sq)
    nonzero = norms > 0.0
    inv = np.zeros_like(norms)
    np.divide(1.0, norms, out=inv, where=nonzero)
    with np.errstate(over="ignore", invalid="ignore"):  # rows in ``odd`` are redone in float64 below
        x = x32 * inv.astype(np.float32)[:, None]
    if odd.size:
        x[odd] = (x32[odd].astype(np.float64) * inv[odd, None]).astype(np.float32)
    return x, nonzero


def _settings(settings: SemanticDupSettings | None) -> SemanticDupSettings:
    if settings is None:
        return SemanticDupSettings()
    if not isinstance(settings, SemanticDupSettings):
        raise ConfigError(f"settings must be a SemanticDupSettings or None, got {type(settings).__name__}")
    return settings


def _map(fn: Callable[[_T], _R], items: list[_T], workers: int) -> list[_R]:
    """``[fn(item) for item in items]``, on ``workers`` threads when there is more than one item."""
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _dot_error(dim: int) -> float:
    """An upper bound (with a factor-2 margin) on float32 rounding in a dot product of unit vectors."""
    return max(1e-6, 2.0 * dim * 2.0**-24)


# ---------------------------------------------------------------------------------------------------
# Model: centroids and principal directions, fitted on a sample


@dataclass(frozen=True)
class _Model:
    """Everything fitted once: k centroids, projection basis, and the per-row screening constants."""

    centroids: F32  # (k, d)
    basis: F32 | None  # (d, p) orthonormal, or None when screening is off
    gaps: F32  # (k, k): ||c_p - c_q|| * eps / 2 plus rounding slack
    proj_slack: float  # added to squared residual norms
    floor: float  # screening keeps pairs whose bound is >= floor
    t: float
    slack: float  # float32 dot-product error bound of a full row product


def _sample(parts: list[tuple[F32, I64]], size: int, rng: np.random.Generator) -> F32:
    """Draw ``size`` of the rows ``x[rows]`` over all ``(x, rows)`` parts, without replacement."""
    total = sum(rows.size for _, rows in parts)
    pick = np.arange(total) if size >= total else np.sort(rng.choice(total, size=size, replace=False))
    out: list[F32] = []
    offset = 0
    for x, rows in parts:
        mine = pick[(pick >= offset) & (pick < offset + rows.size)] - offset
        out.append(x[rows[mine]])
        offset += rows.size
    return np.concatenate(out)


def _kmeans(sample: F32, k: int, iters: int, rng: np.random.Generator, workers: int) -> F32:
    """Spherical k-means (Lloyd, cosine assignment) on ``sample``; returns (k, d) unit centroids."""
    m = sample.shape[0]
    centroids = sample[np.sort(rng.choice(m, size=k, replace=False))].copy()
    rows = np.arange(m)
    step = -(-m // max(1, workers))
    for _ in range(iters):
        parts = _map(lambda s: sample[s : s + step] @ centroids.T, list(range(0, m, step)), workers)
        sims = np.concatenate(parts)
        label = np.argmax(sims, axis=1)
        onehot = sp.csr_matrix((np.ones(m, dtype=np.float32), (label, rows)), shape=(k, m))
        sums = np.asarray(onehot @ sample, dtype=np.float32)
        norms = np.linalg.norm(sums, axis=1)
        filled = norms > 0
        centroids[filled] = sums[filled] / norms[filled, None]
        empty = np.flatnonzero(~filled)
        if empty.size:  # re-seed empty clusters on the rows their centroid serves worst
            worst = np.argsort(sims[rows, label], kind="stable")[: empty.size]
            centroids[empty] = sample[worst]
    return centroids


def _fit(parts: list[tuple[F32, I64]], cfg: SemanticDupSettings, workers: int) -> _Model:
    """Fit centroids and the screening basis on a seeded sample of the rows ``x[rows]`` of all parts."""
    d = parts[0][0].shape[1]
    n_total = sum(rows.size for _, rows in parts)
    t = float(cfg.min_cosine)
    slack = _dot_error(d)
    eps = math.sqrt(max(0.0, 2.0 - 2.0 * (t - slack)))
    k = cfg.clusters_for(n_total)
    rng = np.random.default_rng(int(cfg.seed))
    p = int(cfg.project_dims)
    screen = p > 0 and 2 * p <= d
    sample: F32 | None = None
    if k > 1 or screen:
        sample = _sample(parts, max(int(cfg.kmeans_sample), 32 * k), rng)
    if k > 1 and sample is not None:
        centroids = _kmeans(sample, min(k, sample.shape[0]), int(cfg.kmeans_iters), rng, workers)
    else:
        centroids = np.zeros((1, d), dtype=np.float32)
    basis: F32 | None = None
    proj_slack = 0.0
    floor = t - slack
    if screen and sample is not None:
        second = (sample.T @ sample).astype(np.float64)
        _, vecs = np.linalg.eigh(second)
        basis = np.ascontiguousarray(vecs[:, ::-1][:, :p], dtype=np.float32)
        err = math.sqrt(p) * _dot_error(d)  # bound on ||error of V'x||
        proj_slack = 2.0 * err  # covers the rounding of ||V'x||^2
        floor = t - slack - 3.0 * err - _dot_error(p + 1)
    c = centroids.astype(np.float64)
    sq = np.einsum("ij,ij->i", c, c)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0))
    gaps = (dist * (eps / 2.0) + 2.0 * slack + 1e-6).astype(np.float32)
    return _Model(centroids, basis, gaps, proj_slack, floor, t, slack)


# ---------------------------------------------------------------------------------------------------
# Assignment: labels, halos and screening rows


@dataclass(frozen=True)
class _Assignment:
    """Rows grouped by label, their halo memberships grouped by cluster, and their screening rows."""

    order: I64  # row ids sorted by label (stable)
    starts: I64  # cluster q's rows are order[starts[q]:starts[q + 1]]
    halo: I64  # halo memberships: row ids sorted by cluster, then row
    halo_starts: I64  # cluster q's halo is halo[halo_starts[q]:halo_starts[q + 1]]
    screen: F32  # (n, p + 1) rows [V'x, ||r_x||] (zeros for rows not assigned), or x itself

    def members(self, q: int) -> I64:
        return self.order[self.starts[q] : self.starts[q + 1]]

    def halo_of(self, q: int) -> I64:
        return self.halo[self.halo_starts[q] : self.halo_starts[q + 1]]


def _group(keys: I64, k: int) -> tuple[I64, I64]:
    order = np.argsort(keys, kind="stable").astype(np.int64)
    starts = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=k), out=starts[1:])
    return order, starts


def _assign(x: F32, rows: I64, model: _Model, block: int, workers: int) -> _Assignment:
    """Label ``x[rows]``, list halo memberships, and build the screening rows, in blocks of rows."""
    k = model.centroids.shape[0]
    basis = model.basis
    p = 0 if basis is None else basis.shape[1]
    weights = model.centroids.T if basis is None else np.hstack([model.centroids.T, basis])
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    screen = x if basis is None else np.zeros((x.shape[0], p + 1), dtype=np.float32)

    def one(start: int) -> tuple[I64, I64, I64]:
        chunk = rows[start : start + block]
        xc = x[chunk]
        prod = xc @ weights
        sims = prod[:, :k]
        own = np.argmax(sims, axis=1).astype(np.int64)
        if basis is not None:  # rows of this block only: no two threads write the same row
            z = prod[:, k:]
            xx = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
            zz = np.einsum("ij,ij->i", z, z, dtype=np.float64)
            screen[chunk, :p] = z
            screen[chunk, p] = np.sqrt(np.maximum(xx - zz, 0.0) + model.proj_slack)
        if k == 1:
            return own, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        local = np.arange(chunk.size)
        near = sims >= (sims[local, own][:, None] - model.gaps[own])
        near[local, own] = False
        flat = np.flatnonzero(near)
        return own, chunk[flat // k], (flat % k).astype(np.int64)

    parts = _map(one, list(range(0, rows.size, block)), workers)
    label = np.concatenate([own for own, _, _ in parts])
    halo_rows = np.concatenate([r for _, r, _ in parts])
    halo_clusters = np.concatenate([c for _, _, c in parts])
    order, starts = _group(label, k)
    h_order, h_starts = _group(halo_clusters, k)
    return _Assignment(rows[order], starts, halo_rows[h_order], h_starts, screen)


# ---------------------------------------------------------------------------------------------------
# Screening products and verification

_Found = tuple[I64, I64]


class _Search:
    """Screens row blocks with the projection bound and verifies the survivors with full products."""

    def __init__(self, x_left: F32, x_right: F32, left: _Assignment, right: _Assignment, model: _Model):
        self.x_left, self.x_right = x_left, x_right
        self.s_left, self.s_right = left.screen, right.screen
        self.model = model

    def block(self, ids_left: I64, ids_right: I64, out: list[_Found], diagonal: int | None = None) -> None:
        """Screen ``ids_left x ids_right``; with ``diagonal = s`` keep only right positions > left + s."""
        if ids_left.size == 0 or ids_right.size == 0:
            return
        bound = self.s_left[ids_left] @ self.s_right[ids_right].T
        flat = np.flatnonzero(bound >= np.float32(self.model.floor))
        if flat.size == 0:
            return
        i, j = np.divmod(flat, ids_right.size)
        if diagonal is not None:
            upper = j > i + diagonal
            i, j = i[upper], j[upper]
        out.append((ids_left[i], ids_right[j]))

    def within(self, members: I64, block: int, out: list[_Found]) -> None:
        """All pairs inside one cluster (upper triangle), in blocks of at most ``block`` x ``block``."""
        for s in range(0, members.size, block):
            for r in range(s, members.size, block):
                self.block(members[s : s + block], members[r : r + block], out, diagonal=s - r)

    def against(self, left: I64, right: I64, block: int, out: list[_Found]) -> None:
        """All pairs between two row sets, in blocks of at most ``block`` x ``block``."""
        for r in range(0, right.size, block):
            for s in range(0, left.size, block):
                self.block(left[s : s + block], right[r : r + block], out)

    def verify(self, found: list[list[_Found]], workers: int) -> tuple[I64, I64, F64]:
        """Return the screened pairs whose cosine is >= t, with float64 cosines (repeats kept)."""
        flat = [pair for group in found for pair in group]
        if not flat:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy(), np.zeros(0, dtype=np.float64)
        left = np.concatenate([a for a, _ in flat])
        right = np.concatenate([b for _, b in flat])
        if left.size == 0:  # every block was screened out
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy(), np.zeros(0, dtype=np.float64)
        t, slack = self.model.t, self.model.slack

        def one(start: int) -> tuple[I64, I64, F64]:
            a, b = left[start : start + _VERIFY_CHUNK], right[start : start + _VERIFY_CHUNK]
            xa, xb = self.x_left[a], self.x_right[b]
            cos = np.einsum("ij,ij->i", xa, xb).astype(np.float64)
            hit = np.flatnonzero(cos >= t - slack)
            close = hit[cos[hit] < t + slack]
            if close.size:  # decide borderline pairs in float64
                cos[close] = np.einsum("ij,ij->i", xa[close].astype(np.float64), xb[close].astype(np.float64))
            hit = hit[cos[hit] >= t]
            return a[hit], b[hit], cos[hit]

        parts = _map(one, list(range(0, left.size, _VERIFY_CHUNK)), workers)
        return (
            np.concatenate([a for a, _, _ in parts]),
            np.concatenate([b for _, b, _ in parts]),
            np.concatenate([c for _, _, c in parts]),
        )


def _by_work(sizes: I64) -> list[int]:
    """Cluster ids, largest work first (so parallel workers finish together); empty ones left out."""
    order = np.argsort(-sizes, kind="stable")
    return [int(q) for q in order if sizes[q] > 0]


def _sorted_unique(left: I64, right: I64, cos: F64, n_right: int) -> tuple[I64, F64]:
    """Sort pairs by (left, right) and drop repeats."""
    width = np.int64(max(n_right, 1))
    codes, first = np.unique(left * width + right, return_index=True)
    pairs = np.stack([codes // width, codes % width], axis=1).astype(np.int64)
    return pairs.reshape(-1, 2), cos[first]


def _empty() -> tuple[I64, F64]:
    return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# Public API


def semantic_duplicate_pairs(
    embeddings: npt.ArrayLike, settings: SemanticDupSettings | None = None
) -> tuple[I64, F64]:
    """Return every pair of rows whose cosine similarity is at or above ``settings.min_cosine``.

    ``embeddings`` is an (n, d) array (float32 preferred; other real dtypes are converted).  Rows are
    normalised to unit length; all-zero rows match nothing.  Returns ``(pairs, cosines)``: an (m, 2)
    int64 array of row pairs with ``i < j``, unique and sorted, and their float64 cosine similarities.
    The search is exact (see the module docstring): the seed and the clustering settings change its
    speed, not its result.  Raises InputError for a bad array and ConfigError for bad settings.
    """
    cfg = _settings(settings)
    x, nonzero = normalize_rows(embeddings)
    rows = np.flatnonzero(nonzero).astype(np.int64)
    if rows.size < 2:
        return _empty()
    block, workers = int(cfg.block_rows), cfg.worker_count()
    with threadpool_limits(limits=1, user_api="blas"):
        model = _fit([(x, rows)], cfg, workers)
        assigned = _assign(x, rows, model, block, workers)
        search = _Search(x, x, assigned, assigned, model)

        def cluster(q: int) -> list[_Found]:
            out: list[_Found] = []
            members = assigned.members(q)
            search.within(members, block, out)
            search.against(assigned.halo_of(q), members, block, out)
            return out

        work = np.diff(assigned.starts) * (np.diff(assigned.starts) + np.diff(assigned.halo_starts))
        found = _map(cluster, _by_work(work), workers)
        left, right, cos = search.verify(found, workers)
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    return _sorted_unique(lo, hi, cos, x.shape[0])


def cross_semantic_pairs(
    a: npt.ArrayLike, b: npt.ArrayLike, settings: SemanticDupSettings | None = None
) -> tuple[I64, F64]:
    """Return every pair ``[row of a, row of b]`` whose cosine similarity is at or above the threshold.

    For leakage and contamination checks (a = training set, b = a test or reference set).  Both arrays
    need the same number of columns.  Returns an (m, 2) int64 array sorted by a-row then b-row, and the
    float64 cosines.  Clusters are fitted on a sample of both sets; each cluster's a-rows are compared
    with its b-rows and its b-halo, and its a-halo with its b-rows: exact, as in
    :func:`semantic_duplicate_pairs`.
    """
    cfg = _settings(settings)
    xa, nz_a = normalize_rows(a, "a")
    xb, nz_b = normalize_rows(b, "b")
    if xa.shape[1] != xb.shape[1]:
        raise InputError(f"a and b must have the same number of columns, got {xa.shape[1]} and {xb.shape[1]}")
    rows_a = np.flatnonzero(nz_a).astype(np.int64)
    rows_b = np.flatnonzero(nz_b).astype(np.int64)
    if rows_a.size == 0 or rows_b.size == 0:
        return _empty()
    block, workers = int(cfg.block_rows), cfg.worker_count()
    with threadpool_limits(limits=1, user_api="blas"):
        model = _fit([(xa, rows_a), (xb, rows_b)], cfg, workers)
        in_a = _assign(xa, rows_a, model, block, workers)
        in_b = _assign(xb, rows_b, model, block, workers)
        search = _Search(xa, xb, in_a, in_b, model)

        def cluster(q: int) -> list[_Found]:
            out: list[_Found] = []
            members_a, members_b = in_a.members(q), in_b.members(q)
            if members_b.size:
                search.against(members_a, members_b, block, out)
                search.against(in_a.halo_of(q), members_b, block, out)
            if members_a.size:
                search.against(members_a, in_b.halo_of(q), block, out)
            return out

        size_a, size_b = np.diff(in_a.starts), np.diff(in_b.starts)
        work = size_a * size_b + np.diff(in_a.halo_starts) * size_b + size_a * np.diff(in_b.halo_starts)
        found = _map(cluster, _by_work(work), workers)
        left, right, cos = search.verify(found, workers)
    return _sorted_unique(left, right, cos, xb.shape[0])
