"""Nearest neighbours: one index over all rows, or shards searched apart and merged (Ray's way)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from curata.knn import TIE_MARGIN, Metric, ShardIndex, drop_self, merge_candidates, nearest_neighbours


def _vectors(metric: Metric) -> np.ndarray:
    """Random rows with planted exact duplicates (ties) and near copies."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(120, 12)).astype(np.float32)
    x = np.concatenate([base, base[:8], base[:8], base[10:20] + 0.01 * rng.normal(size=(10, 12))])
    x = x[rng.permutation(len(x))].astype(np.float32)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("shards", [2, 3, 7])
def test_merged_shards_give_the_whole_index_neighbours(metric: Metric, shards: int) -> None:
    x = _vectors(metric)
    k = 5
    whole = nearest_neighbours(x, k, metric)
    bounds = np.linspace(0, len(x), shards + 1).astype(int)
    indexes = [ShardIndex(x[a:b], int(a), metric, exact=True) for a, b in itertools.pairwise(bounds)]
    dist, idx = merge_candidates([s.search(x, k + 1 + TIE_MARGIN) for s in indexes], k + 1)
    merged = drop_self(dist, idx, k, exact=True)
    assert np.array_equal(merged.index, whole.index)
    assert np.allclose(merged.distance, whole.distance, atol=1e-5)
    # Ties (exact duplicates) are listed by row, and no row is its own neighbour.
    rows = np.arange(len(x))[:, None]
    assert not (whole.index == rows).any()
    d = np.round(whole.distance.astype(np.float64), 6)
    same = d[:, 1:] == d[:, :-1]
    assert same.any() and (whole.index[:, 1:][same] > whole.index[:, :-1][same]).all()
    assert (np.diff(d, axis=1) >= 0).all()
