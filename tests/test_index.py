"""Tests for curata.index: exact Hamming pair search checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from curata.errors import ConfigError
from curata.index import hamming_cross_pairs, hamming_pairs


def _brute(a: np.ndarray, b: np.ndarray, r: int) -> dict[tuple[int, int], int]:
    bits_a = np.unpackbits(a, axis=1)
    bits_b = np.unpackbits(b, axis=1)
    d = (bits_a[:, None, :] != bits_b[None, :, :]).sum(axis=2)
    ii, jj = np.nonzero(d <= r)
    return {(int(i), int(j)): int(d[i, j]) for i, j in zip(ii, jj, strict=True)}


def _clustered(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    # Random centres with a few flipped bits each, so many pairs fall inside small radii.
    centres = rng.integers(0, 256, (max(1, n // 4), nbytes), dtype=np.uint8)
    codes = centres[rng.integers(0, len(centres), n)]
    # Per-row flip rates from 0 (exact copies) to 8%, so every radius tested has hits.
    rate = rng.choice([0.0, 0.01, 0.03, 0.08], size=(n, 1))
    flips = np.packbits(rng.random((n, nbytes * 8)) < rate, axis=1)
    return codes ^ flips


@pytest.mark.parametrize("nbytes", [8, 16, 32])
@pytest.mark.parametrize("r", [0, 3, 8, 24])
def test_hamming_pairs_matches_brute_force(nbytes: int, r: int) -> None:
    rng = np.random.default_rng(nbytes * 100 + r)
    codes = _clustered(rng, 300, nbytes)
    pairs, dist = hamming_pairs(codes, r)
    ref = {k: v for k, v in _brute(codes, codes, r).items() if k[0] < k[1]}
    got = {(int(i), int(j)): int(d) for (i, j), d in zip(pairs, dist, strict=True)}
    assert got == ref
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert len(ref) > 0


def test_hamming_pairs_accepts_uint64() -> None:
    rng = np.random.default_rng(1)
    as_bytes = _clustered(rng, 200, 8)
    as_u64 = as_bytes.view(np.uint64).ravel()
    p1, d1 = hamming_pairs(as_bytes, 6)
    p2, d2 = hamming_pairs(as_u64, 6)
    assert np.array_equal(p1, p2) and np.array_equal(d1, d2)


def test_identical_codes_are_all_paired() -> None:
    codes = np.zeros((5, 8), dtype=np.uint8)
    pairs, dist = hamming_pairs(codes, 0)
    assert len(pairs) == 10 and np.all(dist == 0)


@pytest.mark.parametrize(("nbytes", "r"), [(8, 7), (32, 30)])
def test_cross_pairs_match_brute_force(nbytes: int, r: int) -> None:
    rng = np.random.default_rng(2)
    both = _clustered(rng, 400, nbytes)
    a, b = both[:150], both[150:]
    for x, y in ((a, b), (b, a)):
        pairs, dist = hamming_cross_pairs(x, y, r)
        got = {(int(i), int(j)): int(d) for (i, j), d in zip(pairs, dist, strict=True)}
        assert got == _brute(x, y, r)
        assert len(got) > 0


def test_results_do_not_depend_on_query_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import curata.index as index

    rng = np.random.default_rng(3)
    codes = _clustered(rng, 500, 32)
    whole = hamming_pairs(codes, 20)
    monkeypatch.setattr(index, "_BLOCK", 37)
    blocked = hamming_pairs(codes, 20)
    assert np.array_equal(whole[0], blocked[0]) and np.array_equal(whole[1], blocked[1])


def test_empty_and_bad_input() -> None:
    empty = np.zeros((0, 8), dtype=np.uint8)
    assert hamming_pairs(empty, 3)[0].shape == (0, 2)
    assert hamming_pairs(np.zeros((1, 8), dtype=np.uint8), 3)[0].shape == (0, 2)
    assert hamming_cross_pairs(empty, np.zeros((3, 8), dtype=np.uint8), 3)[0].shape == (0, 2)
    with pytest.raises(ConfigError):
        hamming_pairs(np.zeros((3, 8), dtype=np.float32), 3)
    with pytest.raises(ConfigError):
        hamming_pairs(np.zeros((3, 8), dtype=np.uint8), -1)
    with pytest.raises(ConfigError):
        hamming_cross_pairs(np.zeros((3, 8), dtype=np.uint8), np.zeros((3, 16), dtype=np.uint8), 3)
