"""Tests of curata.semantic: exact semantic near-duplicate pairs on embeddings, against brute force."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from curata.errors import ConfigError, InputError
from curata.semantic import (
    SemanticDupSettings,
    cross_semantic_pairs,
    normalize_rows,
    semantic_duplicate_pairs,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _at_cosine(
    base: npt.NDArray[np.float64], cos: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """A unit vector whose cosine with the unit vector ``base`` is exactly ``cos`` (in float64)."""
    noise = rng.standard_normal(base.shape)
    noise -= noise.dot(base) * base
    return cos * base + math.sqrt(1.0 - cos * cos) * _unit(noise)


def _clustered(n: int, d: int, centres: int, spread: float, seed: int) -> npt.NDArray[np.float64]:
    """Unit rows around ``centres`` random directions (Gaussian noise of scale ``spread`` per dim)."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((centres, d)))
    rows = c[rng.integers(0, centres, n)] + rng.standard_normal((n, d)) * spread
    return _unit(rows)


def _with_near_copies(x: npt.NDArray[np.float64], copies: int, seed: int) -> F32:
    """Append ``copies`` rows, each at a cosine in [0.9, 1.0] (a few exactly at 1) to a random row."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, x.shape[0], copies)
    cos = rng.uniform(0.9, 1.0, copies)
    cos[:5] = 1.0
    new = np.stack([_at_cosine(x[s], c, rng) for s, c in zip(src, cos, strict=True)])
    return np.concatenate([x, new]).astype(np.float32)


def brute_pairs(x: npt.ArrayLike, t: float) -> tuple[I64, npt.NDArray[np.float64]]:
    """Reference: all pairs i < j with float64 cosine of the float32 unit rows >= t."""
    u, _ = normalize_rows(x)
    u64 = u.astype(np.float64)
    sims = u64 @ u64.T
    i, j = np.nonzero(np.triu(sims >= t, k=1))
    return np.stack([i, j], axis=1).astype(np.int64).reshape(-1, 2), sims[i, j]


def brute_cross(a: npt.ArrayLike, b: npt.ArrayLike, t: float) -> I64:
    ua, _ = normalize_rows(a)
    ub, _ = normalize_rows(b)
    i, j = np.nonzero(ua.astype(np.float64) @ ub.astype(np.float64).T >= t)
    return np.stack([i, j], axis=1).astype(np.int64).reshape(-1, 2)


def _labels(x: F32, settings: SemanticDupSettings) -> I64:
    """The cluster label of every row, as the search assigns them (to find boundary-straddling pairs)."""
    from curata import semantic

    u, nonzero = normalize_rows(x)
    rows = np.flatnonzero(nonzero).astype(np.int64)
    model = semantic._fit([(u, rows)], settings, 1)
    assigned = semantic._assign(u, rows, model, settings.block_rows, 1)
    label = np.full(x.shape[0], -1, dtype=np.int64)
    for q in range(model.centroids.shape[0]):
        label[assigned.members(q)] = q
    return label


# ---------------------------------------------------------------------------------------------------
# Planted pairs and the threshold


def test_planted_pairs_above_found_and_just_below_not() -> None:
    rng = np.random.default_rng(1)
    base = _unit(rng.standard_normal((400, 96)))  # random 96-d directions: cosines ~ N(0, 0.1)
    levels = [0.99, 0.96, 0.9502, 0.9498, 0.94, 0.90]
    rows = list(base)
    planted: dict[float, tuple[int, int]] = {}
    for k, cos in enumerate(levels):
        rows.append(_at_cosine(base[k], cos, rng))
        planted[cos] = (k, len(rows) - 1)
    x = np.array(rows, dtype=np.float32)
    pairs, cos = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=0.95))
    found = {tuple(p) for p in pairs.tolist()}
    assert found == {planted[0.99], planted[0.96], planted[0.9502]}
    assert np.allclose(np.sort(cos), [0.9502, 0.96, 0.99], atol=1e-6)
    # At 0.9 every planted pair but 0.90 itself (float rounding may put it either side) is in.
    pairs, _ = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=0.935))
    assert {tuple(p) for p in pairs.tolist()} == {planted[c] for c in levels if c > 0.935}


def test_output_format_sorted_unique_upper() -> None:
    x = _with_near_copies(_clustered(600, 40, 8, 0.08, seed=2), 150, seed=3)
    pairs, cos = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=0.9))
    assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2
    assert cos.dtype == np.float64 and cos.shape == (pairs.shape[0],)
    assert pairs.shape[0] > 100
    assert (pairs[:, 0] < pairs[:, 1]).all()
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    assert (order == np.arange(pairs.shape[0])).all()
    assert np.unique(pairs, axis=0).shape == pairs.shape
    assert (cos >= 0.9).all() and (cos <= 1.0 + 1e-6).all()


# ---------------------------------------------------------------------------------------------------
# Exact agreement with brute force, including pairs that straddle cluster boundaries


@pytest.mark.parametrize("t", [0.9, 0.95, 0.99])
def test_equals_brute_force_on_clustered_data_with_screening(t: float) -> None:
    # 3,000 rows in 48-d around 12 centres, split into 40 k-means clusters, with 600 near copies.
    x = _with_near_copies(_clustered(2400, 48, 12, 0.09, seed=4), 600, seed=5)
    settings = SemanticDupSettings(min_cosine=t, n_clusters=40, project_dims=12, seed=7)
    pairs, cos = semantic_duplicate_pairs(x, settings)
    ref, ref_cos = brute_pairs(x, t)
    assert ref.shape[0] > 50
    np.testing.assert_array_equal(pairs, ref)
    np.testing.assert_allclose(cos, ref_cos, atol=1e-6)


def _bridged(seed: int) -> tuple[F32, I64]:
    """12 groups of 250 rows around random centres in 48-d, plus 200 planted pairs that straddle the
    boundary between two groups: ``m +- s w`` with m on the bisector of two centres and w along their
    difference, at cosines in [0.9, 0.995].  Returns the rows and the planted pairs."""
    rng = np.random.default_rng(seed)
    d, groups = 48, 12
    centres = _unit(rng.standard_normal((groups, d)))
    rows = [_unit(centres[g] + rng.standard_normal((250, d)) * 0.09) for g in range(groups)]
    bridges: list[npt.NDArray[np.float64]] = []
    for _ in range(200):
        a, b = rng.choice(groups, size=2, replace=False)
        w = _unit(centres[a] - centres[b])
        m = centres[a] + centres[b] + rng.standard_normal(d) * 0.15
        m = _unit(m - m.dot(w) * w)  # on the bisector, orthogonal to w
        c = rng.uniform(0.9, 0.995)
        s = math.sqrt((1.0 - c) / (1.0 + c))  # cos(m + s w, m - s w) = c
        bridges += [_unit(m + s * w), _unit(m - s * w)]
    x = np.concatenate([*rows, np.array(bridges)]).astype(np.float32)
    first = groups * 250
    planted = np.stack([np.arange(first, x.shape[0], 2), np.arange(first + 1, x.shape[0], 2)], axis=1)
    return x, planted.astype(np.int64)


@pytest.mark.parametrize("t", [0.9, 0.95, 0.99])
def test_pairs_straddling_cluster_boundaries_are_found(t: float) -> None:
    x, planted = _bridged(seed=17)
    settings = SemanticDupSettings(min_cosine=t, n_clusters=12, project_dims=12, seed=2)
    pairs, _ = semantic_duplicate_pairs(x, settings)
    ref, _ = brute_pairs(x, t)
    np.testing.assert_array_equal(pairs, ref)
    # Most true pairs straddle a boundary: plain SemDeDup (within clusters only) would miss them.
    label = _labels(x, settings)
    straddle = label[ref[:, 0]] != label[ref[:, 1]]
    assert ref.shape[0] >= 10 and straddle.mean() > 0.5, (int(straddle.sum()), ref.shape[0])
    planted_codes = planted[:, 0] * x.shape[0] + planted[:, 1]
    assert np.isin(ref[:, 0] * x.shape[0] + ref[:, 1], planted_codes).mean() > 0.9


def test_equals_brute_force_without_screening_and_with_default_settings() -> None:
    x = _with_near_copies(_clustered(2500, 32, 10, 0.1, seed=6), 400, seed=8)
    ref, _ = brute_pairs(x, 0.95)
    # d = 32 < 2 * project_dims: the projection screen is off, the boundary bound alone prunes.
    no_screen, _ = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=0.95, n_clusters=25))
    defaults, _ = semantic_duplicate_pairs(x)
    np.testing.assert_array_equal(no_screen, ref)
    np.testing.assert_array_equal(defaults, ref)


def test_result_does_not_depend_on_search_settings() -> None:
    x = _with_near_copies(_clustered(2000, 64, 15, 0.08, seed=9), 500, seed=10)
    ref, ref_cos = brute_pairs(x, 0.93)
    variants = [
        SemanticDupSettings(min_cosine=0.93, n_clusters=1),
        SemanticDupSettings(min_cosine=0.93, n_clusters=7, seed=1, workers=1),
        SemanticDupSettings(min_cosine=0.93, n_clusters=60, seed=2, workers=3, block_rows=17),
        SemanticDupSettings(min_cosine=0.93, n_clusters=200, kmeans_iters=0, project_dims=4),
        SemanticDupSettings(min_cosine=0.93, n_clusters=30, kmeans_sample=50, project_dims=0),
    ]
    for settings in variants:
        pairs, cos = semantic_duplicate_pairs(x, settings)
        np.testing.assert_array_equal(pairs, ref, err_msg=str(settings))
        np.testing.assert_allclose(cos, ref_cos, atol=1e-6)


def test_deterministic_with_the_seed() -> None:
    x = _with_near_copies(_clustered(2500, 48, 10, 0.1, seed=11), 300, seed=12)
    settings = SemanticDupSettings(min_cosine=0.92, n_clusters=30, project_dims=16, seed=3)
    a = semantic_duplicate_pairs(x, settings)
    b = semantic_duplicate_pairs(x.copy(), settings)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_exact_copies_and_a_cluster_larger_than_a_block() -> None:
    rng = np.random.default_rng(13)
    x = _unit(rng.standard_normal((300, 24))).astype(np.float32)
    x[100:160] = x[7] * 3.0  # 61 rows pointing the same way (scaled copies), one cluster for sure
    pairs, cos = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=1.0, n_clusters=4, block_rows=16))
    same = [7, *range(100, 160)]
    expected = {(a, b) for a in same for b in same if a < b}
    assert {tuple(p) for p in pairs.tolist()} == expected
    assert np.allclose(cos, 1.0)


# ---------------------------------------------------------------------------------------------------
# Cross pairs (leakage against a reference set)


def test_cross_pairs_equal_brute_force() -> None:
    rng = np.random.default_rng(14)
    a = _clustered(1500, 48, 10, 0.09, seed=15)
    b = _clustered(1000, 48, 10, 0.09, seed=15 + 100)
    leaked = rng.choice(1500, size=120, replace=False)
    b[:120] = np.stack(
        [_at_cosine(a[i], c, rng) for i, c in zip(leaked, rng.uniform(0.9, 1.0, 120), strict=True)]
    )
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    for t in (0.9, 0.95, 0.99):
        settings = SemanticDupSettings(min_cosine=t, n_clusters=24, project_dims=12)
        pairs, cos = cross_semantic_pairs(a32, b32, settings)
        ref = brute_cross(a32, b32, t)
        assert ref.shape[0] >= 5
        np.testing.assert_array_equal(pairs, ref)
        assert (cos >= t).all()
    # The planted leaks are all there at 0.9.
    pairs, _ = cross_semantic_pairs(a32, b32, SemanticDupSettings(min_cosine=0.9, n_clusters=24))
    assert {(int(i), k) for k, i in enumerate(leaked)} <= {tuple(p) for p in pairs.tolist()}


def test_cross_pairs_small_inputs_and_default_settings() -> None:
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 0.0]], dtype=np.float32)
    pairs, cos = cross_semantic_pairs(a, b)
    assert pairs.tolist() == [[0, 0]]
    assert cos.tolist() == [1.0]
    empty, _ = cross_semantic_pairs(np.zeros((0, 3), np.float32), b)
    assert empty.shape == (0, 2)


# ---------------------------------------------------------------------------------------------------
# Zero rows, tiny inputs, dtypes


def test_zero_rows_never_match() -> None:
    rng = np.random.default_rng(16)
    x = _unit(rng.standard_normal((50, 16))).astype(np.float32)
    x[10] = 0.0
    x[11] = 0.0
    x[12] = x[3]
    pairs, _ = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=0.99))
    assert pairs.tolist() == [[3, 12]]
    u, nonzero = normalize_rows(x)
    assert not nonzero[10] and not nonzero[11] and nonzero.sum() == 48
    assert (u[10] == 0).all()
    assert np.allclose(np.linalg.norm(u[nonzero], axis=1), 1.0, atol=1e-6)
    all_zero, _ = semantic_duplicate_pairs(np.zeros((5, 4), dtype=np.float32))
    assert all_zero.shape == (0, 2)


def test_no_pair_anywhere_gives_an_empty_result() -> None:
    """Spread-out rows where every screened block is empty (once raised on concatenating nothing)."""
    x = np.random.default_rng(8).normal(size=(200, 24)).astype(np.float32)
    pairs, cosines = semantic_duplicate_pairs(x, SemanticDupSettings(min_cosine=0.95))
    assert pairs.shape == (0, 2) and cosines.shape == (0,)


def test_tiny_inputs_and_other_dtypes() -> None:
    assert semantic_duplicate_pairs(np.zeros((0, 8), np.float32))[0].shape == (0, 2)
    assert semantic_duplicate_pairs(np.ones((1, 8), np.float32))[0].shape == (0, 2)
    ints = np.array([[1, 2, 3], [2, 4, 6], [3, -1, 0]], dtype=np.int64)
    pairs, cos = semantic_duplicate_pairs(ints, SemanticDupSettings(min_cosine=0.999))
    assert pairs.tolist() == [[0, 1]] and abs(cos[0] - 1.0) < 1e-6
    f64 = np.array([[1e-30, 0.0], [2e-30, 1e-36], [1e30, 1e30]], dtype=np.float64)
    pairs, _ = semantic_duplicate_pairs(f64, SemanticDupSettings(min_cosine=0.99))
    assert pairs.tolist() == [[0, 1]]  # tiny and huge values are normalised without under/overflow
    pairs, _ = semantic_duplicate_pairs([[1.0, 0.0], [1.0, 0.01]], SemanticDupSettings(min_cosine=0.99))
    assert pairs.tolist() == [[0, 1]]


# ---------------------------------------------------------------------------------------------------
# Bad inputs and settings


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros(5, np.float32), "2-D"),
        (np.zeros((2, 3, 4), np.float32), "2-D"),
        (np.zeros((3, 0), np.float32), "at least one column"),
        (np.array([["a", "b"]]), "real numbers"),
        (np.array([[True, False]]), "real numbers"),
        (np.array([[1.0, np.nan], [0.0, 1.0]], np.float32), "row 0 holds NaN"),
        (np.array([[1.0, 0.0], [np.inf, 1.0]]), "row 1 holds NaN or inf"),
        (np.array([[1e300, 0.0]]), "row 0"),
    ],
)
def test_bad_embeddings_raise_input_error(value: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        semantic_duplicate_pairs(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_cosine": 0.0}, r"min_cosine must be a number in \(0, 1\]"),
        ({"min_cosine": 1.01}, "min_cosine"),
        ({"min_cosine": -0.5}, "min_cosine"),
        ({"min_cosine": float("nan")}, "min_cosine"),
        ({"min_cosine": "0.9"}, "min_cosine"),
        ({"min_cosine": True}, "min_cosine"),
        ({"n_clusters": 0}, "n_clusters must be None or an integer >= 1"),
        ({"n_clusters": 2.5}, "n_clusters"),
        ({"seed": -1}, "seed"),
        ({"kmeans_iters": -1}, "kmeans_iters"),
        ({"kmeans_sample": 0}, "kmeans_sample"),
        ({"project_dims": -2}, "project_dims"),
        ({"block_rows": 0}, "block_rows"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SemanticDupSettings(**kwargs)  # type: ignore[arg-type]


def test_bad_calls_raise() -> None:
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="SemanticDupSettings"):
        semantic_duplicate_pairs(x, {"min_cosine": 0.9})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="same number of columns"):
        cross_semantic_pairs(x, np.eye(3, dtype=np.float32))
    with pytest.raises(InputError, match=r"^b must be finite"):
        cross_semantic_pairs(x, np.full((2, 4), np.nan, dtype=np.float32))
    # Errors are also the matching built-ins.
    with pytest.raises(ValueError):
        SemanticDupSettings(min_cosine=2.0)
