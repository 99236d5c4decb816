"""Tests of curata.lsh: candidate pairs, cross pairs, exact Jaccard and the near-duplicate pipeline."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from curata.errors import ConfigError
from curata.lsh import candidate_pairs, cross_candidate_pairs, jaccard_of_pairs, near_duplicate_pairs
from curata.signals.text import MinHashSettings, band_keys, minhash_signatures, shingle_hashes

WORDS = [f"word{i}" for i in range(2000)]


def _doc(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def test_candidate_pairs_small_example() -> None:
    keys = np.array(
        [
            [1, 10],
            [2, 10],  # shares band 1 with row 0
            [1, 11],  # shares band 0 with row 0
            [3, 12],
            [10, 1],  # key 10 in band 0 and key 1 in band 1: different bands never match
        ],
        dtype=np.uint64,
    )
    pairs = candidate_pairs(keys)
    assert pairs.dtype == np.int64
    assert pairs.tolist() == [[0, 1], [0, 2]]
    assert candidate_pairs(np.zeros((0, 4), dtype=np.uint64)).shape == (0, 2)


def test_candidate_pairs_all_pairs_within_small_bucket() -> None:
    keys = np.array([[5], [7], [5], [5], [7]], dtype=np.uint64)
    assert candidate_pairs(keys).tolist() == [[0, 2], [0, 3], [1, 4], [2, 3]]


def test_huge_bucket_is_not_quadratic() -> None:
    n = 10_000
    keys = np.full((n, 20), 42, dtype=np.uint64)
    start = time.perf_counter()
    pairs = candidate_pairs(keys, max_bucket=100)
    assert time.perf_counter() - start < 5.0
    assert pairs.shape[0] <= 2 * n
    assert np.all(pairs[:, 0] < pairs[:, 1])
    # Star from row 0 plus chain: every row is linked to the hub and to its neighbour.
    as_set = {tuple(p) for p in pairs.tolist()}
    assert all((0, j) in as_set for j in range(1, n))
    assert all((j, j + 1) in as_set for j in range(1, n - 1))
    with pytest.raises(ConfigError):
        candidate_pairs(keys, max_bucket=1)


def test_cross_candidate_pairs() -> None:
    ka = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint64)
    kb = np.array([[9, 4], [1, 9], [1, 2], [7, 7]], dtype=np.uint64)
    assert cross_candidate_pairs(ka, kb).tolist() == [[0, 1], [0, 2], [1, 0]]
    # A huge shared key: every row on both sides still gets a partner, without a full product.
    big_a = np.full((3000, 1), 8, dtype=np.uint64)
    big_b = np.full((2000, 1), 8, dtype=np.uint64)
    pairs = cross_candidate_pairs(big_a, big_b, max_bucket=100)
    assert pairs.shape[0] < 3000 + 2000
    assert set(pairs[:, 0].tolist()) == set(range(3000))
    assert set(pairs[:, 1].tolist()) == set(range(2000))
    with pytest.raises(ConfigError):
        cross_candidate_pairs(ka, kb[:, :1])


def test_jaccard_of_pairs_matches_python_sets() -> None:
    rng = random.Random(5)
    texts = [_doc(rng, rng.randint(0, 25)) for _ in range(30)]
    texts += [texts[0], texts[1][: len(texts[1]) // 2], ""]
    settings = MinHashSettings()
    hashes, offsets = shingle_hashes(texts, settings)
    n = len(texts)
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64)
    got = jaccard_of_pairs(hashes, offsets, pairs)
    sets = [set(hashes[offsets[i] : offsets[i + 1]].tolist()) for i in range(n)]
    for (i, j), value in zip(pairs.tolist(), got.tolist(), strict=True):
        union = sets[i] | sets[j]
        expected = len(sets[i] & sets[j]) / len(union) if union else 0.0
        assert value == pytest.approx(expected, abs=1e-12)
    assert jaccard_of_pairs(hashes, offsets, pairs[[0]]).shape == (1,)
    with pytest.raises(ConfigError):
        jaccard_of_pairs(hashes, offsets, np.array([[0, n]]))


def test_near_duplicates_found_and_unrelated_not_paired() -> None:
    rng = random.Random(9)
    bases = [_doc(rng, 80) for _ in range(40)]
    texts = list(bases)
    families = {}
    for b, base in enumerate(bases[:20]):
        words = base.split(" ")
        words[rng.randrange(len(words))] = "changed"  # one substitution: Jaccard about 0.9
        families[b] = len(texts)
        texts.append(" ".join(words))
    texts += ["", "", "short", "short"]
    settings = MinHashSettings()
    pairs, jac = near_duplicate_pairs(texts, settings)
    found = {tuple(p) for p in pairs.tolist()}
    for b, copy in families.items():
        assert (b, copy) in found
    assert np.all(jac >= settings.min_jaccard)
    n = len(texts)
    assert (n - 2, n - 1) in found  # identical short texts
    assert (n - 4, n - 3) not in found  # empty texts are never near-duplicates
    # Nothing else: unrelated random documents share almost no 5-grams.
    assert len(found) == len(families) + 1


def test_banding_recall_and_candidate_volume() -> None:
    rng = random.Random(13)
    settings = MinHashSettings()
    a_texts, b_texts = [], []
    for _ in range(200):
        a = _doc(rng, 100)
        words = a.split(" ")
        for _ in range(2):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        a_texts.append(a)
        b_texts.append(" ".join(words))
    sigs = minhash_signatures(a_texts + b_texts, settings)
    keys = band_keys(sigs, settings)
    pairs = {tuple(p) for p in candidate_pairs(keys).tolist()}
    hits = sum((i, i + 200) in pairs for i in range(200))
    assert hits >= 196  # Jaccard ~0.85 pairs: candidate probability > 0.99 each
    assert len(pairs) < 260  # unrelated pairs almost never collide
    cross = {tuple(p) for p in cross_candidate_pairs(keys[:200], keys[200:]).tolist()}
    assert sum((i, i) in cross for i in range(200)) == hits
