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

Engines.  Without an engine the products run on threads of this process.  Given a curata engine
(``curata.engine``: local processes or a Ray cluster), the two heavy stages run as its batches: the
assignment (a batch is a few ``block_rows`` blocks of rows, sent with the centroids, projection and
gaps, which a Ray engine stores once per call) and the search (a batch is a group of clusters of about
equal work, a few groups per engine worker, sent with only the rows its clusters and halos hold, and
verified where it ran).  The k-means fit stays here on threads: its Lloyd steps see only the sample
(``kmeans_sample`` rows, at least 32 per cluster), about ``kmeans_iters * sample / n`` of the
assignment's work (a fifth at a million rows with the defaults, 6% at ten million), and the search
costs more than the assignment.  The result is the same set of pairs with the same cosines whatever
runs it: each pair's cosine is computed from the same two rows by the same code, and which rows
meet only changes the speed.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from curata.errors import ConfigError, InputError

if TYPE_CHECKING:
    from curata import outofcore
    from curata.engine.base import ColumnRows, Engine

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
#: With an engine, each stage is cut into about this many batches per engine worker (so that workers
#: finishing early find more to do) ...
_BATCHES_PER_WORKER = 4
#: ... unless batches would then hold more than this many ``block_rows`` blocks of rows.
_BATCH_BLOCKS = 8


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
      With an engine, only the k-means fit runs on these threads; the engine's workers run the rest.
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

    def limits(self) -> _Limits:
        """The constants the search compares with (small: what a search batch is sent)."""
        return _Limits(self.floor, self.t, self.slack)

    def weights(self) -> F32:
        """The (d, k + p) matrix of one assignment product: centroids, then the projection basis."""
        w = self.centroids.T if self.basis is None else np.hstack([self.centroids.T, self.basis])
        return np.ascontiguousarray(w, dtype=np.float32)


@dataclass(frozen=True)
class _Limits:
    """Screening keeps bounds ``>= floor``; verification keeps cosines ``>= t`` (rounding ``slack``)."""

    floor: float
    t: float
    slack: float


def _sample(parts: list[tuple[F32, I64]], size: int, rng: np.random.Generator) -> F32:
    """Draw ``size`` of the rows ``x[rows]`` over all ``(x, rows)`` parts, without replacement."""
    total = sum(rows.size for _, rows in parts)
    pick = _sample_positions(total, size, rng)
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
    n_total = sum(rows.size for _, rows in parts)
    d = parts[0][0].shape[1]
    return _fit_drawn(d, n_total, cfg, workers, lambda size, rng: _sample(parts, size, rng))


def _sample_positions(total: int, size: int, rng: np.random.Generator) -> I64:
    """Which of ``total`` rows :func:`_sample` draws (the same calls on ``rng``), ascending."""
    return np.arange(total) if size >= total else np.sort(rng.choice(total, size=size, replace=False))


def _fit_drawn(
    d: int,
    n_total: int,
    cfg: SemanticDupSettings,
    workers: int,
    draw: Callable[[int, np.random.Generator], F32],
) -> _Model:
    """:func:`_fit` over ``n_total`` rows of width ``d``, its sample drawn by ``draw(size, rng)``."""
    t = float(cfg.min_cosine)
    slack = _dot_error(d)
    eps = math.sqrt(max(0.0, 2.0 - 2.0 * (t - slack)))
    k = cfg.clusters_for(n_total)
    rng = np.random.default_rng(int(cfg.seed))
    p = int(cfg.project_dims)
    screen = p > 0 and 2 * p <= d
    sample: F32 | None = None
    if k > 1 or screen:
        sample = draw(max(int(cfg.kmeans_sample), 32 * k), rng)
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


_Labelled = tuple[I64, I64, I64, F32 | None]


def _label_block(xc: F32, weights: F32, gaps: F32, k: int, proj_slack: float) -> _Labelled:
    """Label one block of unit rows with one product by ``weights`` (see :meth:`_Model.weights`).

    Returns each row's label, its halo memberships as (position in ``xc``, cluster) and the block's
    screening rows ``[V'x, ||r_x||]`` (None when ``weights`` holds no projection basis).
    """
    prod = xc @ weights
    sims = prod[:, :k]
    own = np.argmax(sims, axis=1).astype(np.int64)
    p = weights.shape[1] - k
    screen: F32 | None = None
    if p > 0:
        z = prod[:, k:]
        xx = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
        zz = np.einsum("ij,ij->i", z, z, dtype=np.float64)
        screen = np.empty((xc.shape[0], p + 1), dtype=np.float32)
        screen[:, :p] = z
        screen[:, p] = np.sqrt(np.maximum(xx - zz, 0.0) + proj_slack)
    if k == 1:
        empty = np.zeros(0, dtype=np.int64)
        return own, empty, empty.copy(), screen
    local = np.arange(xc.shape[0])
    near = sims >= (sims[local, own][:, None] - gaps[own])
    near[local, own] = False
    flat = np.flatnonzero(near).astype(np.int64)
    return own, flat // k, flat % k, screen


def _assign_task(xb: F32, weights: F32, gaps: F32, k: int, proj_slack: float, block: int) -> _Labelled:
    """Engine batch: :func:`_label_block` over the rows ``xb`` in blocks of ``block``, joined."""
    own: list[I64] = []
    near: list[I64] = []
    clusters: list[I64] = []
    screens: list[F32] = []
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, xb.shape[0], block):
            o, r, c, z = _label_block(xb[start : start + block], weights, gaps, k, proj_slack)
            own.append(o)
            near.append(r + start)
            clusters.append(c)
            if z is not None:
                screens.append(z)
    screen = np.concatenate(screens) if screens else None
    return np.concatenate(own), np.concatenate(near), np.concatenate(clusters), screen


def _blocks_per_batch(n_rows: int, block: int, workers: int) -> int:
    """Blocks of rows per engine batch: a few batches per worker, at most ``_BATCH_BLOCKS`` blocks."""
    n_blocks = -(-n_rows // block)
    return max(1, min(_BATCH_BLOCKS, -(-n_blocks // (_BATCHES_PER_WORKER * max(1, workers)))))


def _assign_on(
    engine: Engine, x: F32, rows: I64, screen: F32, model: _Model, block: int
) -> list[tuple[I64, I64, I64]]:
    """The labelled blocks of ``x[rows]`` from ``engine`` batches; their screening rows go to ``screen``."""
    span = block * _blocks_per_batch(rows.size, block, engine.workers)
    starts = range(0, rows.size, span)
    # Only each batch's rows travel with it.  The weights (d x (k + p)) and gaps (k x k) are the
    # call's arguments: a Ray engine stores them once; a local process pool sends them with every
    # batch, which is why a batch holds several blocks.
    args = (model.weights(), model.gaps, model.centroids.shape[0], model.proj_slack, block)
    results = engine.map_batches(
        _assign_task,
        (x[rows[start : start + span]] for start in starts),
        args=args,
        description="semantic duplicates: clustering",
        total=len(starts),
    )
    parts: list[tuple[I64, I64, I64]] = []
    for start, (own, near, clusters, z) in zip(starts, results, strict=True):
        chunk = rows[start : start + span]
        if z is not None:
            screen[chunk] = z
        parts.append((own, chunk[near], clusters))
    return parts


def _assign(
    x: F32, rows: I64, model: _Model, block: int, workers: int, engine: Engine | None = None
) -> _Assignment:
    """Label ``x[rows]``, list halo memberships, and build the screening rows, in blocks of rows.

    The blocks run on ``workers`` threads, or as ``engine`` batches when one is given.
    """
    k = model.centroids.shape[0]
    basis = model.basis
    screen = x if basis is None else np.zeros((x.shape[0], basis.shape[1] + 1), dtype=np.float32)
    if engine is None:
        weights = model.weights()

        def one(start: int) -> tuple[I64, I64, I64]:
            chunk = rows[start : start + block]
            own, near, clusters, z = _label_block(x[chunk], weights, model.gaps, k, model.proj_slack)
            if z is not None:  # rows of this block only: no two threads write the same row
                screen[chunk] = z
            return own, chunk[near], clusters

        parts = _map(one, list(range(0, rows.size, block)), workers)
    else:
        parts = _assign_on(engine, x, rows, screen, model, block)
    return _assignment(parts, rows, k, screen)


def _assignment(parts: list[tuple[I64, I64, I64]], rows: I64, k: int, screen: F32) -> _Assignment:
    """The :class:`_Assignment` of ``rows`` from their blocks' (labels, halo rows, halo clusters)."""
    label = np.concatenate([own for own, _, _ in parts])
    halo_rows = np.concatenate([r for _, r, _ in parts])
    halo_clusters = np.concatenate([c for _, _, c in parts])
    order, starts = _group(label, k)
    h_order, h_starts = _group(halo_clusters, k)
    return _Assignment(rows[order], starts, halo_rows[h_order], h_starts, screen)


# ---------------------------------------------------------------------------------------------------
# Screening products and verification

_Found = tuple[I64, I64]
_Pairs = tuple[I64, I64, F64]


@dataclass(frozen=True)
class _Job:
    """Compare the rows ``left`` with the rows ``right``; ``within``: they are the same list, and only
    pairs of a row with a later one in it are compared."""

    left: I64
    right: I64
    within: bool = False


class _Search:
    """Screens row blocks with the projection bound and verifies the survivors with full products."""

    def __init__(self, x_left: F32, x_right: F32, s_left: F32, s_right: F32, limits: _Limits) -> None:
        self.x_left, self.x_right = x_left, x_right
        self.s_left, self.s_right = s_left, s_right
        self.limits = limits

    def block(self, ids_left: I64, ids_right: I64, out: list[_Found], diagonal: int | None = None) -> None:
        """Screen ``ids_left x ids_right``; with ``diagonal = s`` keep only right positions > left + s."""
        if ids_left.size == 0 or ids_right.size == 0:
            return
        bound = self.s_left[ids_left] @ self.s_right[ids_right].T
        flat = np.flatnonzero(bound >= np.float32(self.limits.floor))
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

    def run(self, jobs: list[_Job], block: int) -> list[_Found]:
        """The screened pairs of ``jobs``, in order."""
        out: list[_Found] = []
        for job in jobs:
            if job.within:
                self.within(job.left, block, out)
            else:
                self.against(job.left, job.right, block, out)
        return out

    def verify(self, found: list[list[_Found]], workers: int) -> _Pairs:
        """Return the screened pairs whose cosine is >= t, with float64 cosines (repeats kept)."""
        flat = [pair for group in found for pair in group]
        if not flat:
            return _no_pairs()
        left = np.concatenate([a for a, _ in flat])
        right = np.concatenate([b for _, b in flat])
        if left.size == 0:  # every block was screened out
            return _no_pairs()
        t, slack = self.limits.t, self.limits.slack

        def one(start: int) -> _Pairs:
            a, b = left[start : start + _VERIFY_CHUNK], right[start : start + _VERIFY_CHUNK]
            xa, xb = self.x_left[a], self.x_right[b]
            cos = np.einsum("ij,ij->i", xa, xb).astype(np.float64)
            hit = np.flatnonzero(cos >= t - slack)
            close = hit[cos[hit] < t + slack]
            if close.size:  # decide borderline pairs in float64
                cos[close] = np.einsum("ij,ij->i", xa[close].astype(np.float64), xb[close].astype(np.float64))
            hit = hit[cos[hit] >= t]
            return a[hit], b[hit], cos[hit]

        return _join(_map(one, list(range(0, left.size, _VERIFY_CHUNK)), workers))


def _no_pairs() -> _Pairs:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty.copy(), np.zeros(0, dtype=np.float64)


def _join(parts: list[_Pairs]) -> _Pairs:
    if not parts:
        return _no_pairs()
    return (
        np.concatenate([a for a, _, _ in parts]),
        np.concatenate([b for _, b, _ in parts]),
        np.concatenate([c for _, _, c in parts]),
    )


def _self_jobs(assigned: _Assignment, q: int) -> list[_Job]:
    """Cluster ``q`` of a set against itself: its members with each other, then its halo with them."""
    members = assigned.members(q)
    return [_Job(members, members, within=True), _Job(assigned.halo_of(q), members)]


def _cross_jobs(in_a: _Assignment, in_b: _Assignment, q: int) -> list[_Job]:
    """Cluster ``q`` of set a against set b: a-members with b-members and b-halo, a-halo with b-members."""
    members_a, members_b = in_a.members(q), in_b.members(q)
    jobs: list[_Job] = []
    if members_b.size:
        jobs += [_Job(members_a, members_b), _Job(in_a.halo_of(q), members_b)]
    if members_a.size:
        jobs.append(_Job(members_a, in_b.halo_of(q)))
    return jobs


def _by_work(sizes: I64) -> list[int]:
    """Cluster ids, largest work first (so parallel workers finish together); empty ones left out."""
    order = np.argsort(-sizes, kind="stable")
    return [int(q) for q in order if sizes[q] > 0]


def _search_threads(
    search: _Search, jobs_of: Callable[[int], list[_Job]], work: I64, block: int, workers: int
) -> _Pairs:
    """Every cluster's jobs on ``workers`` threads (largest first), then the verification."""
    found = _map(lambda q: search.run(jobs_of(q), block), _by_work(work), workers)
    return search.verify(found, workers)


# ---------------------------------------------------------------------------------------------------
# Search as engine batches


@dataclass(frozen=True)
class _SearchBatch:
    """The jobs of a group of clusters, with only the rows they compare (an engine batch).

    ``left`` and ``right`` are the ids of the rows sent (sorted), ``x_*`` those rows and ``s_*`` their
    screening rows (None: the rows themselves, when screening is off); the jobs hold positions in
    them.  ``right`` and its rows are None when a set is searched against itself (right = left).
    """

    left: I64
    x_left: F32
    s_left: F32 | None
    right: I64 | None
    x_right: F32 | None
    s_right: F32 | None
    jobs: list[_Job]


def _renumber(jobs: list[_Job], same: bool) -> tuple[I64, I64, list[_Job]]:
    """The rows ``jobs`` use (left, and right: the same array when ``same``), sorted, and the jobs
    renumbered to positions among them."""
    left = np.unique(np.concatenate([j.left for j in jobs] + ([j.right for j in jobs] if same else [])))
    right = left if same else np.unique(np.concatenate([j.right for j in jobs]))
    local = [_Job(np.searchsorted(left, j.left), np.searchsorted(right, j.right), j.within) for j in jobs]
    return left, right, local


def _pack(jobs: list[_Job], search: _Search, same: bool) -> _SearchBatch:
    """A batch of ``jobs``: the rows they use, and the jobs renumbered to positions among those rows."""
    left, right, local = _renumber(jobs, same)
    s_left = None if search.s_left is search.x_left else search.s_left[left]
    if same:
        return _SearchBatch(left, search.x_left[left], s_left, None, None, None, local)
    s_right = None if search.s_right is search.x_right else search.s_right[right]
    return _SearchBatch(left, search.x_left[left], s_left, right, search.x_right[right], s_right, local)


def _search_task(batch: _SearchBatch, limits: _Limits, block: int) -> _Pairs:
    """Engine batch: run the jobs of a group of clusters and verify what they find.

    Returns the pairs at or above the threshold as (left row id, right row id, float64 cosine).
    """
    x_left = batch.x_left
    s_left = x_left if batch.s_left is None else batch.s_left
    if batch.right is None:
        right_ids, x_right, s_right = batch.left, x_left, s_left
    else:
        right_ids = batch.right
        x_right = batch.x_right if batch.x_right is not None else x_left
        s_right = x_right if batch.s_right is None else batch.s_right
    with threadpool_limits(limits=1, user_api="blas"):
        search = _Search(x_left, x_right, s_left, s_right, limits)
        a, b, cos = search.verify([search.run(batch.jobs, block)], 1)
    return batch.left[a], right_ids[b], cos


def _search_groups(engine: Engine, work: I64, rows_sent: int, block: int) -> list[list[int]]:
    """Clusters in engine batches: a few per engine worker, more when they would hold over
    ``_BATCH_BLOCKS`` blocks of rows (``rows_sent``: members plus halo memberships of all clusters)."""
    count = max(_BATCHES_PER_WORKER * engine.workers, -(-rows_sent // (_BATCH_BLOCKS * block)))
    return _work_groups(work, count)


def _work_groups(work: I64, count: int) -> list[list[int]]:
    """Clusters with work in at most ``count`` groups of about equal total work.

    Largest cluster first, each to the group with the least work so far.
    """
    order = _by_work(work)
    count = max(1, min(count, len(order)))
    heap = [(0, g) for g in range(count)]
    groups: list[list[int]] = [[] for _ in range(count)]
    for q in order:
        load, g = heapq.heappop(heap)
        groups[g].append(q)
        heapq.heappush(heap, (load + int(work[q]), g))
    return [g for g in groups if g]


def _search_on(
    engine: Engine,
    search: _Search,
    jobs_of: Callable[[int], list[_Job]],
    work: I64,
    rows_sent: int,
    same: bool,
    block: int,
) -> _Pairs:
    """Every cluster's jobs as ``engine`` batches of clusters, each verified where it ran.

    A few batches per engine worker, more when they would hold over ``_BATCH_BLOCKS`` blocks of rows
    (``rows_sent``: members plus halo memberships of all clusters).  Batches are made as the engine
    asks for them, so only those in flight hold copies of rows.
    """
    groups = _search_groups(engine, work, rows_sent, block)
    batches = (_pack([job for q in group for job in jobs_of(q)], search, same) for group in groups)
    found = engine.map_batches(
        _search_task,
        batches,
        args=(search.limits, block),
        description="semantic duplicates: search",
        total=len(groups),
    )
    return _join(list(found))


# ---------------------------------------------------------------------------------------------------
# Stored embeddings: a distributed engine's tasks read the rows from the signal cache's files

#: Rows a task reads at once to find the non-zero rows.
_MASK_ROWS = 65_536


def _read_unit(pieces: list[tuple[str, int]], name: str, file_rows: I64) -> tuple[F32, B]:
    """Task side: the rows ``file_rows`` of column ``name`` of ``pieces``, as :func:`normalize_rows`
    makes them (row by row: the same values as over the whole array)."""
    from curata.engine.base import read_file_rows

    return normalize_rows(read_file_rows(pieces, name, file_rows, np.float32))


def _nonzero_task(batch: tuple[list[tuple[str, int]], I64], name: str) -> B:
    """Engine batch: which of the batch's stored rows are not all zero."""
    return _read_unit(batch[0], name, batch[1])[1]


def _rows_task(batch: tuple[list[tuple[str, int]], I64], name: str) -> F32:
    """Engine batch: the batch's stored rows at unit length."""
    return _read_unit(batch[0], name, batch[1])[0]


def _assign_stored_task(
    batch: tuple[list[tuple[str, int]], I64],
    name: str,
    weights: F32,
    gaps: F32,
    k: int,
    proj_slack: float,
    block: int,
    folder: str,
) -> tuple[I64, I64, I64, tuple[str, int] | None]:
    """Engine batch: :func:`_assign_task` over stored rows it reads; its screening rows go to an
    Arrow file in ``folder`` (column ``screen``), whose (path, rows) it returns."""
    import uuid

    import pyarrow as pa

    from curata import outofcore

    x, _ = _read_unit(batch[0], name, batch[1])
    own, near, clusters, z = _assign_task(x, weights, gaps, k, proj_slack, block)
    if z is None:
        return own, near, clusters, None
    table = pa.table({"screen": pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), z.shape[1])})
    path = Path(folder) / f"screen-{uuid.uuid4().hex}.arrow"
    outofcore.write_arrow_file(path, [table], table.schema)
    return own, near, clusters, (str(path), z.shape[0])


@dataclass(frozen=True)
class _StoredBatch:
    """The jobs of a group of clusters and where their rows are: ``left`` the row positions (sorted),
    ``pieces``/``file_rows`` the embedding rows to read for them, ``screen_pieces``/``screen_rows``
    their screening rows (None: screening is off); the jobs hold positions in ``left``."""

    left: I64
    pieces: list[tuple[str, int]]
    file_rows: I64
    screen_pieces: list[tuple[str, int]] | None
    screen_rows: I64 | None
    jobs: list[_Job]


def _search_stored_task(batch: _StoredBatch, name: str, limits: _Limits, block: int) -> _Pairs:
    """Engine batch: read the batch's rows (and screening rows), then :func:`_search_task`."""
    from curata.engine.base import read_file_rows

    x, _ = _read_unit(batch.pieces, name, batch.file_rows)
    screen = None
    if batch.screen_pieces is not None and batch.screen_rows is not None:
        screen = read_file_rows(batch.screen_pieces, "screen", batch.screen_rows, np.float32)
    return _search_task(_SearchBatch(batch.left, x, screen, None, None, None, batch.jobs), limits, block)


def _stored_pairs(
    engine: Engine, stored: ColumnRows, cfg: SemanticDupSettings, folder: outofcore.TempFolder
) -> tuple[I64, F64]:
    """:func:`semantic_duplicate_pairs` of stored embeddings, every stage as ``engine`` batches of
    row positions whose tasks read the rows themselves: this process holds the labels, the halo
    lists and the pairs, never the vectors."""
    from curata.engine.base import file_pieces

    files, name = stored.files, stored.name
    sel = np.arange(len(stored.column), dtype=np.int64) if stored.rows is None else np.asarray(stored.rows)
    m = sel.size

    def at(positions: I64) -> tuple[list[tuple[str, int]], I64]:
        file_rows = sel[positions]
        return file_pieces(files, file_rows), file_rows

    spans = range(0, m, _MASK_ROWS)
    masks = engine.map_batches(
        _nonzero_task,
        (at(np.arange(a, min(m, a + _MASK_ROWS))) for a in spans),
        args=(name,),
        description="semantic duplicates: rows",
        total=len(spans),
    )
    rows = np.flatnonzero(np.concatenate([np.zeros(0, bool), *masks])).astype(np.int64)
    if rows.size < 2:
        return _empty()
    block, workers = int(cfg.block_rows), cfg.worker_count()

    def draw(size: int, rng: np.random.Generator) -> F32:
        pick = rows[_sample_positions(rows.size, size, rng)]
        return next(iter(engine.map_batches(_rows_task, iter([at(pick)]), args=(name,))))

    with threadpool_limits(limits=1, user_api="blas"):
        model = _fit_drawn(stored.width, rows.size, cfg, workers, draw)
        k = model.centroids.shape[0]
        span = block * _blocks_per_batch(rows.size, block, engine.workers)
        starts = range(0, rows.size, span)
        args = (name, model.weights(), model.gaps, k, model.proj_slack, block, str(folder.path))
        labelled = engine.map_batches(
            _assign_stored_task,
            (at(rows[a : a + span]) for a in starts),
            args=args,
            description="semantic duplicates: clustering",
            total=len(starts),
        )
        parts: list[tuple[I64, I64, I64]] = []
        screen_files: list[tuple[str, int]] = []
        for a, (own, near, clusters, written) in zip(starts, labelled, strict=True):
            parts.append((own, rows[a : a + span][near], clusters))
            if written is not None:
                screen_files.append(written)
        # The screening rows are in the files just written, not here.
        assigned = _assignment(parts, rows, k, np.zeros((0, 0), np.float32))
        screens = tuple(screen_files)

        def pack(jobs: list[_Job]) -> _StoredBatch:
            left, _, local = _renumber(jobs, True)
            pieces, file_rows = at(left)
            if not screens:
                return _StoredBatch(left, pieces, file_rows, None, None, local)
            screen_rows = np.searchsorted(rows, left).astype(np.int64)  # screening rows follow ``rows``
            screen_pieces = file_pieces(screens, screen_rows)
            return _StoredBatch(left, pieces, file_rows, screen_pieces, screen_rows, local)

        work = np.diff(assigned.starts) * (np.diff(assigned.starts) + np.diff(assigned.halo_starts))
        groups = _search_groups(engine, work, rows.size + assigned.halo.size, block)
        found = engine.map_batches(
            _search_stored_task,
            (pack([job for q in group for job in _self_jobs(assigned, q)]) for group in groups),
            args=(name, model.limits(), block),
            description="semantic duplicates: search",
            total=len(groups),
        )
        left, right, cos = _join(list(found))
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    return _sorted_unique(lo, hi, cos, m)


def _stored_input(embeddings: Any, engine: Engine | None) -> tuple[ColumnRows, outofcore.TempFolder] | None:
    """``embeddings`` and a folder for the screening rows when it is a :class:`ColumnRows` kept in
    files that ``engine``'s workers reach (and the folder beside them too), else None."""
    from curata.engine.base import ColumnRows, ContentEngine

    if not isinstance(embeddings, ColumnRows) or not isinstance(engine, ContentEngine):
        return None
    if not embeddings.stored_for(engine.reaches):
        return None
    tmp = Path(embeddings.files[0][0]).parent.parent / "tmp"
    if not engine.reaches(tmp):
        return None
    import uuid

    from curata import outofcore

    return embeddings, outofcore.TempFolder(tmp / f"semantic-{uuid.uuid4().hex}")


def _sorted_unique(left: I64, right: I64, cos: F64, n_right: int) -> tuple[I64, F64]:
    """Sort pairs by (left, right) and drop repeats."""
    width = np.int64(max(n_right, 1))
    codes, first = np.unique(left * width + right, return_index=True)
    pairs = np.stack([codes // width, codes % width], axis=1).astype(np.int64)
    return pairs.reshape(-1, 2), cos[first]


def _empty() -> tuple[I64, F64]:
    return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)


def _engine(engine: Engine | None) -> Engine | None:
    """The engine to send batches to, or None for this process's threads.

    An engine that is not ``distributed`` (the embedded local one) gets threads too: numpy and faiss
    release the GIL, so threads use every core without pickling blocks to a process pool or starting
    one per stage (on 42k x 128 rows the pool took 1.35 s against 0.5 s on threads). Distributed
    engines (Ray) get batches.
    """
    if engine is not None and not callable(getattr(engine, "map_batches", None)):
        raise ConfigError(f"engine must be a curata engine or None, got {type(engine).__name__}")
    if engine is not None and not getattr(engine, "distributed", True):
        return None
    return engine


# ---------------------------------------------------------------------------------------------------
# Public API


def semantic_duplicate_pairs(
    embeddings: npt.ArrayLike | ColumnRows,
    settings: SemanticDupSettings | None = None,
    engine: Engine | None = None,
) -> tuple[I64, F64]:
    """Return every pair of rows whose cosine similarity is at or above ``settings.min_cosine``.

    ``embeddings`` is an (n, d) array (float32 preferred; other real dtypes are converted).  Rows are
    normalised to unit length; all-zero rows match nothing.  Returns ``(pairs, cosines)``: an (m, 2)
    int64 array of row pairs with ``i < j``, unique and sorted, and their float64 cosine similarities.
    The search is exact (see the module docstring): the seed and the clustering settings change its
    speed, not its result.  ``engine`` (a curata engine, e.g. Ray) runs the assignment and the search
    as its batches instead of threads here, with the same result.  Raises InputError for a bad array
    and ConfigError for bad settings.
    """
    from curata.engine.base import ColumnRows

    cfg = _settings(settings)
    eng = _engine(engine)
    stored = _stored_input(embeddings, eng)
    if stored is not None and eng is not None:
        return _stored_pairs(eng, stored[0], cfg, stored[1])
    if isinstance(embeddings, ColumnRows):
        embeddings = embeddings.to_array()
    x, nonzero = normalize_rows(embeddings)
    rows = np.flatnonzero(nonzero).astype(np.int64)
    if rows.size < 2:
        return _empty()
    block, workers = int(cfg.block_rows), cfg.worker_count()
    with threadpool_limits(limits=1, user_api="blas"):
        model = _fit([(x, rows)], cfg, workers)
        assigned = _assign(x, rows, model, block, workers, eng)
        search = _Search(x, x, assigned.screen, assigned.screen, model.limits())

        def jobs_of(q: int) -> list[_Job]:
            return _self_jobs(assigned, q)

        work = np.diff(assigned.starts) * (np.diff(assigned.starts) + np.diff(assigned.halo_starts))
        if eng is None:
            left, right, cos = _search_threads(search, jobs_of, work, block, workers)
        else:
            sent = rows.size + assigned.halo.size
            left, right, cos = _search_on(eng, search, jobs_of, work, sent, True, block)
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    return _sorted_unique(lo, hi, cos, x.shape[0])


def cross_semantic_pairs(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    settings: SemanticDupSettings | None = None,
    engine: Engine | None = None,
) -> tuple[I64, F64]:
    """Return every pair ``[row of a, row of b]`` whose cosine similarity is at or above the threshold.

    For leakage and contamination checks (a = training set, b = a test or reference set).  Both arrays
    need the same number of columns.  Returns an (m, 2) int64 array sorted by a-row then b-row, and the
    float64 cosines.  Clusters are fitted on a sample of both sets; each cluster's a-rows are compared
    with its b-rows and its b-halo, and its a-halo with its b-rows: exact, as in
    :func:`semantic_duplicate_pairs` (``engine`` as there).
    """
    cfg = _settings(settings)
    eng = _engine(engine)
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
        in_a = _assign(xa, rows_a, model, block, workers, eng)
        in_b = _assign(xb, rows_b, model, block, workers, eng)
        search = _Search(xa, xb, in_a.screen, in_b.screen, model.limits())

        def jobs_of(q: int) -> list[_Job]:
            return _cross_jobs(in_a, in_b, q)

        size_a, size_b = np.diff(in_a.starts), np.diff(in_b.starts)
        work = size_a * size_b + np.diff(in_a.halo_starts) * size_b + size_a * np.diff(in_b.halo_starts)
        if eng is None:
            left, right, cos = _search_threads(search, jobs_of, work, block, workers)
        else:
            sent = rows_a.size + rows_b.size + in_a.halo.size + in_b.halo.size
            left, right, cos = _search_on(eng, search, jobs_of, work, sent, False, block)
    return _sorted_unique(left, right, cos, xb.shape[0])
