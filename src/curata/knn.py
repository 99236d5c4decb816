"""Nearest neighbours (faiss): cosine distance for unit vectors, Euclidean for tabular features.

Exact (flat search) up to ``EXACT_MAX_ROWS`` rows; above that an HNSW graph, whose recall is high
but not perfect. Each row's own entry is removed from its neighbour list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from curata.errors import ConfigError

#: Above this many rows the index is approximate (HNSW); at or below it, exact.
EXACT_MAX_ROWS = 100_000


Metric = Literal["cosine", "euclidean"]


@dataclass(frozen=True)
class Neighbours:
    """``index[i]`` are the rows nearest to row i (best first, -1 where fewer exist), ``distance``
    their distances (cosine distance 1 - similarity, or Euclidean); ``exact`` says whether the
    search was exhaustive."""

    index: np.ndarray
    distance: np.ndarray
    exact: bool


def _faiss_index(dim: int, n: int, metric: Metric) -> tuple[object, bool]:
    exact = n <= EXACT_MAX_ROWS
    return _new_index(dim, exact, metric), exact


def _new_index(dim: int, exact: bool, metric: Metric) -> Any:
    import faiss

    if exact:
        return faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.IndexHNSWFlat(dim, 32, kind)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = 128
    return index


def _distances(raw: np.ndarray, metric: Metric) -> np.ndarray:
    """faiss scores to distances: 1 - inner product, or the root of squared L2."""
    if metric == "cosine":
        return np.asarray(1.0 - raw, dtype=np.float32)
    out: np.ndarray = np.sqrt(np.maximum(raw, 0.0)).astype(np.float32)
    return out


def nearest_neighbours(vectors: np.ndarray, k: int, metric: Metric = "cosine") -> Neighbours:
    """The ``k`` nearest other rows of every row of ``vectors`` (unit rows for cosine)."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    index, exact = _faiss_index(x.shape[1], n, metric)
    index.add(x)  # type: ignore[attr-defined]
    want = min(k + 1, n)
    raw, idx = index.search(x, min(want + TIE_MARGIN, n))  # type: ignore[attr-defined]
    dist, idx = ordered(_distances(raw, metric), idx)
    return drop_self(dist[:, :want], idx[:, :want], k, exact)


#: Distances closer than this count as ties, which are ordered by row (see :func:`ordered`).
TIE_DECIMALS = 6
#: Neighbours searched beyond the ``k + 1`` kept: which of several rows tied at the last place
#: faiss returns depends on how it scans, so a few more are fetched and the lowest rows kept.
TIE_MARGIN = 8


def ordered(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's neighbours by (distance, row), missing ones (-1) last.

    faiss lists rows at equal distances in no fixed order (and keeps any of them at the last
    place); distances equal to ``TIE_DECIMALS`` decimals are ties (one distance computed over a
    shard of the rows may differ from the same one over all rows in its last bit). Searching
    ``TIE_MARGIN`` more than needed and ordering by (distance, row) makes every engine keep the
    same rows in the same order (unless more than ``TIE_MARGIN`` rows tie at the last place).
    """
    key = np.where(idx >= 0, np.round(dist.astype(np.float64), TIE_DECIMALS), np.inf)
    order = np.lexsort((np.where(idx >= 0, idx, np.iinfo(np.int64).max), key), axis=-1)
    return np.take_along_axis(dist, order, axis=-1), np.take_along_axis(idx, order, axis=-1)


def merge_candidates(parts: list[tuple[np.ndarray, np.ndarray]], want: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` nearest of each row among the (distance, row) candidates of several shards."""
    dist, idx = ordered(
        np.concatenate([d for d, _ in parts], axis=1), np.concatenate([i for _, i in parts], axis=1)
    )
    return dist[:, :want], idx[:, :want]


class ShardIndex:
    """One shard of the rows in its own faiss index (a worker of a distributed search: the index is
    built once, then searched for every block of queries)."""

    def __init__(self, rows: np.ndarray, offset: int, metric: Metric, exact: bool) -> None:
        self._index = _new_index(rows.shape[1], exact, metric)
        self._index.add(np.ascontiguousarray(rows, dtype=np.float32))
        self._rows = len(rows)
        self._offset = offset
        self._metric: Metric = metric

    def search(self, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` nearest rows of the shard to each query: (distances, rows of all data)."""
        raw, idx = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(want, self._rows))
        return _distances(raw, self._metric), np.where(idx >= 0, idx + self._offset, -1).astype(np.int64)


def cross_neighbours(queries: np.ndarray, base: np.ndarray, k: int, metric: Metric = "cosine") -> Neighbours:
    """The ``k`` rows of ``base`` nearest to each row of ``queries``."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    b = np.ascontiguousarray(base, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    index, exact = _faiss_index(b.shape[1], b.shape[0], metric)
    index.add(b)  # type: ignore[attr-defined]
    raw, idx = index.search(q, min(k, b.shape[0]))  # type: ignore[attr-defined]
    return Neighbours(np.asarray(idx, np.int64), _distances(raw, metric), exact)


def drop_self(dist: np.ndarray, idx: np.ndarray, k: int, exact: bool) -> Neighbours:
    """Remove each row's own entry (or the last one when ties pushed it out) and keep ``k``."""
    n = idx.shape[0]
    rows = np.arange(n)[:, None]
    is_self = idx == rows
    # Rows whose self entry is missing (exact duplicates tie with it) drop their last entry instead.
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    width = idx.shape[1] - 1
    out_idx = idx[keep].reshape(n, width)[:, :k]
    out_dist = dist[keep].reshape(n, width)[:, :k]
    out_idx = np.where(out_idx < 0, -1, out_idx)
    return Neighbours(np.asarray(out_idx, np.int64), np.asarray(out_dist, np.float32), exact)
