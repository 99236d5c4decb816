"""Tests of curata.signals.text: normalisation, shingle hashes, MinHash signatures, band keys, n-grams."""

from __future__ import annotations

import random

import numpy as np
import pytest

from curata.errors import ConfigError
from curata.signals import text as tx
from curata.signals.text import (
    MinHashSettings,
    band_keys,
    minhash_signatures,
    normalize_text,
    shingle_hashes,
    word_ngram_hashes,
)

MASK = (1 << 64) - 1
WORDS = [f"w{i}" for i in range(400)] + ["été", "naïve", "日本語", "straße", "ok"]


def _doc(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _mutate(rng: random.Random, text: str, rate: float) -> str:
    out = []
    for w in text.split(" "):
        r = rng.random()
        if r < rate / 2:
            out.append(rng.choice(WORDS))
        elif r < rate:
            continue
        else:
            out.append(w)
    return " ".join(out)


def _segments(hashes: np.ndarray, offsets: np.ndarray) -> list[set[int]]:
    return [set(hashes[offsets[i] : offsets[i + 1]].tolist()) for i in range(offsets.size - 1)]


def _char_shingles(text: str, n: int) -> set[str]:
    if not text:
        return set()
    if len(text) < n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def _jaccard(a: set[object], b: set[object]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


# --- normalisation -----------------------------------------------------------------------------------


def test_normalize_nfkc_case_and_whitespace() -> None:
    assert normalize_text("  Hello\t\tWORLD \n") == "hello world"
    assert normalize_text("ﬁne Ｔｅｘｔ") == "fine text"  # ligature and fullwidth letters (NFKC)
    assert normalize_text("Straße") == "strasse"  # casefold, not lower
    assert normalize_text("a\u00a0b\u3000c\r\nd") == "a b c d"  # NBSP, ideographic space, CRLF
    assert normalize_text("") == ""
    assert normalize_text(" \t\n ") == ""


# --- shingles ----------------------------------------------------------------------------------------


def test_char_shingle_sets_match_python_sets() -> None:
    rng = random.Random(1)
    texts = [_doc(rng, rng.randint(0, 30)) for _ in range(60)] + ["", "a", "abcd", "abcde", "日本語テキスト"]
    settings = MinHashSettings()
    hashes, offsets = shingle_hashes(texts, settings)
    assert hashes.dtype == np.uint64 and offsets.dtype == np.int64 and offsets.size == len(texts) + 1
    sets = _segments(hashes, offsets)
    for i, t in enumerate(texts):
        seg = hashes[offsets[i] : offsets[i + 1]]
        assert np.all(np.diff(seg.astype(np.float64)) > 0) or seg.size <= 1  # sorted and unique
        assert len(sets[i]) == len(_char_shingles(t, 5))
    # Equal shingles hash equally across documents: pairwise intersections match the string sets.
    for i in range(0, len(texts) - 1, 3):
        ref_a, ref_b = _char_shingles(texts[i], 5), _char_shingles(texts[i + 1], 5)
        assert len(sets[i] & sets[i + 1]) == len(ref_a & ref_b)


def test_short_and_empty_texts() -> None:
    settings = MinHashSettings()
    hashes, offsets = shingle_hashes(["", "abc", "", "abc", "abcd"], settings)
    assert np.diff(offsets).tolist() == [0, 1, 0, 1, 1]
    assert hashes[offsets[1]] == hashes[offsets[3]]
    assert hashes[offsets[1]] != hashes[offsets[4]]
    sigs = minhash_signatures(["", "abc", ""], settings)
    assert np.all(sigs[0] == np.iinfo(np.uint32).max) and np.all(sigs[2] == np.iinfo(np.uint32).max)
    assert not np.all(sigs[1] == np.iinfo(np.uint32).max)
    assert minhash_signatures([], settings).shape == (0, settings.num_perm)
    empty_h, empty_o = shingle_hashes([], settings)
    assert empty_h.size == 0 and empty_o.tolist() == [0]


def test_word_shingles_and_short_word_text() -> None:
    settings = MinHashSettings(shingle="word", ngram=3, bands=16, rows=8)
    texts = ["a b c d", "x y", "", "a b c"]
    hashes, offsets = shingle_hashes(texts, settings)
    assert np.diff(offsets).tolist() == [2, 1, 0, 1]
    sets = _segments(hashes, offsets)
    assert sets[3] <= sets[0]  # "a b c" is the first 3-gram of "a b c d"
    # Hash values are batch-independent: the same text alone gives the same set.
    alone_h, _ = shingle_hashes(["a b c d"], settings)
    assert set(alone_h.tolist()) == sets[0]


def test_non_ascii_text_hashes_code_points() -> None:
    settings = MinHashSettings()
    texts = ["naïve café 日本語のテキスト", "naive cafe 日本語のテキスト"]
    hashes, offsets = shingle_hashes(texts, settings)
    sets = _segments(hashes, offsets)
    ref = [_char_shingles(t, 5) for t in texts]
    assert len(sets[0] & sets[1]) == len(ref[0] & ref[1])
    assert len(sets[0]) == len(ref[0])


# --- word n-grams --------------------------------------------------------------------------------------


def _splitmix(x: int) -> int:
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & MASK
    return x ^ (x >> 31)


def _ref_word_ngrams(text: str, n: int) -> set[int]:
    """Slow pure-Python re-implementation of the documented word n-gram hash."""
    char_pos = [int(v) for v in tx._CHAR_POS]
    win_pos = [int(v) for v in tx._WINDOW_POS]
    len_mix = int(tx._LEN_MIX)
    words = []
    for w in text.split():
        acc = sum(ord(c) * char_pos[k % 256] for k, c in enumerate(w)) + len(w) * len_mix
        words.append(_splitmix(acc & MASK))
    out = set()
    for i in range(len(words) - n + 1):
        acc = sum(words[i + j] * win_pos[j] for j in range(n)) + n * len_mix
        out.add(_splitmix(acc & MASK))
    return out


def test_word_ngram_hashes_match_pure_python_reference() -> None:
    rng = random.Random(7)
    texts = [_doc(rng, rng.randint(0, 40)) for _ in range(40)] + ["", "one", "a b c d e f g h i j k l m"]
    for n in (1, 3, 13):
        hashes, offsets = word_ngram_hashes(texts, n)
        got = _segments(hashes, offsets)
        for i, t in enumerate(texts):
            assert got[i] == _ref_word_ngrams(t, n), (n, t)
            assert int(offsets[i + 1] - offsets[i]) == len(got[i])  # unique per text
    hashes, offsets = word_ngram_hashes(["a b", "a b c"], 3)
    assert np.diff(offsets).tolist() == [0, 1]


def test_word_ngram_rejects_bad_n() -> None:
    with pytest.raises(ConfigError):
        word_ngram_hashes(["a b"], 0)


# --- signatures ----------------------------------------------------------------------------------------


def test_identical_texts_get_identical_signatures_in_any_batch() -> None:
    rng = random.Random(3)
    base = _doc(rng, 50)
    others = [_doc(rng, 30) for _ in range(20)]
    settings = MinHashSettings()
    s1 = minhash_signatures([base, *others, base], settings)
    s2 = minhash_signatures([*others[:5], base], settings)
    assert s1.dtype == np.uint32 and s1.shape == (22, settings.num_perm)
    assert np.array_equal(s1[0], s1[-1]) and np.array_equal(s1[0], s2[-1])
    assert not np.array_equal(s1[0], s1[1])
    # Another seed gives other permutations.
    s3 = minhash_signatures([base], MinHashSettings(seed=1))
    assert not np.array_equal(s1[0], s3[0])


def test_estimated_jaccard_close_to_exact() -> None:
    rng = random.Random(11)
    settings = MinHashSettings(num_perm=512, bands=64, rows=8)
    errors = []
    for rate in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
        for _ in range(5):
            a = _doc(rng, 120)
            b = _mutate(rng, a, rate)
            sig = minhash_signatures([a, b], settings)
            est = float(np.mean(sig[0] == sig[1]))
            exact = _jaccard(_char_shingles(a, 5), _char_shingles(b, 5))
            # Binomial standard error with 512 permutations is at most 0.022.
            assert abs(est - exact) < 0.09, (rate, est, exact)
            errors.append(est - exact)
    assert abs(float(np.mean(errors))) < 0.02  # no bias
    assert float(np.mean(np.abs(errors))) < 0.03


def test_band_keys_equal_iff_band_columns_equal() -> None:
    settings = MinHashSettings(num_perm=12, bands=3, rows=4)
    sig = np.arange(36, dtype=np.uint32).reshape(3, 12)
    sig[1, :4] = sig[0, :4]  # rows 0 and 1 share band 0 only
    keys = band_keys(sig, settings)
    assert keys.shape == (3, 3) and keys.dtype == np.uint64
    assert keys[0, 0] == keys[1, 0] and keys[0, 1] != keys[1, 1]
    # The band index is mixed in: the same columns in another band give another key.
    same = np.zeros((1, 12), dtype=np.uint32)
    k = band_keys(same, settings)
    assert len(set(k[0].tolist())) == 3
    with pytest.raises(ConfigError):
        band_keys(np.zeros((2, 8), dtype=np.uint32), settings)


# --- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shingle": "byte"}, "shingle"),
        ({"ngram": 0}, "ngram"),
        ({"num_perm": -1}, "num_perm"),
        ({"bands": 0}, "bands"),
        ({"rows": True}, "rows"),
        ({"bands": 20, "rows": 7}, "bands * rows"),
        ({"seed": -1}, "seed"),
        ({"min_jaccard": 0.0}, "min_jaccard"),
        ({"min_jaccard": 1.5}, "min_jaccard"),
    ],
)
def test_settings_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("*", r"\*")):
        MinHashSettings(**kwargs)  # type: ignore[arg-type]


def test_fingerprint_is_stable_and_distinguishes_settings() -> None:
    a = MinHashSettings()
    assert a.fingerprint() == MinHashSettings().fingerprint()
    assert f"v{tx.ALGORITHM_VERSION}" in a.fingerprint()
    others = {
        MinHashSettings(seed=1).fingerprint(),
        MinHashSettings(shingle="word").fingerprint(),
        MinHashSettings(num_perm=256).fingerprint(),
        MinHashSettings(min_jaccard=0.9).fingerprint(),
        a.fingerprint(),
    }
    assert len(others) == 5
    assert len(a.fingerprint()) < 64
