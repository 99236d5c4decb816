"""Benchmark text near-duplicate detection: quality against exact truth and signature throughput.

Quality: pairs with exact char-5-gram Jaccard >= 0.8 on (a) the Debian fortunes corpus and (b) 200k seeded
synthetic documents in families (a base document of 30-120 words drawn from the fortunes vocabulary with
its empirical, Zipf-like word frequencies, plus 0-7 copies mutated by word deletions, substitutions and
insertions at a per-copy rate in [0, 0.2], so family pairs spread over Jaccard ~0.5-1.0).  curata =
candidate_pairs + exact verification; datasketch = its default ``MinHashLSH(threshold=0.8, num_perm=128)``
fed with the same shingle strings (no verification, which is how it is normally used).

Truth, fortunes: exact all-pairs with a prefix filter (rarest-first token order): a pair with Jaccard >= t
must share one of the first ``|A| - ceil(t |A|) + 1`` tokens of each set, so verifying every pair that
shares a prefix token finds all of them without the n^2 loop.

Truth, synthetic (the prefix filter is too slow there: common words make huge token groups): every
within-family pair verified exactly, plus every cross-family pair proposed by (i) a dedicated
low-threshold LSH (384 permutations, independent seed, 96 bands x 4 rows: a pair is proposed with
probability 1 - (1 - J^4)^96, >= 0.998 at J = 0.5 and 1 - 1e-22 at J = 0.8), (ii) datasketch and (iii)
curata's own LSH, each verified exactly; plus a seeded random sample of 1M cross-family pairs verified
exactly (how many reach 0.8 is printed; expected 0).

Throughput: raw normalised text -> signatures, medians of >= 3 runs, on the synthetic documents: curata
(one process and a 2-process pool over 4 batches) on all of them, rensa and datasketch (their Python
tokenisation included, and a pre-made-shingle variant) on leading slices (same seeded length
distribution; sizes printed).  Run ``python benchmarks/bench_text_dups.py [--quick]``; figures go to
``benchmarks/results/text_dups.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from curata.lsh import candidate_pairs, jaccard_of_pairs
from curata.signals.text import MinHashSettings, band_keys, minhash_signatures, normalize_text, shingle_hashes

FORTUNES = Path("/usr/share/games/fortunes")
RESULTS = Path(__file__).parent / "results" / "text_dups.json"
THRESHOLD = 0.8
NUM_PERM = 128
MAX_EDIT_RATE = 0.2
#: Truth-only banding for the synthetic set: P(candidate) = 1 - (1 - J^4)^96, >= 0.998 at J = 0.5.
LOW_LSH = MinHashSettings(num_perm=384, bands=96, rows=4, seed=0x5EED5EED)
RANDOM_CROSS_PAIRS = 1_000_000
#: datasketch runs on a seeded subset of families if the full synthetic set would take longer than this.
DATASKETCH_BUDGET_S = 480.0
DATASKETCH_SUBSET_DOCS = 50_000

I64 = npt.NDArray[np.int64]


def load_fortunes() -> list[str]:
    """Return every fortune under /usr/share/games/fortunes, normalised (skips .dat/.u8 and symlinks)."""
    out: list[str] = []
    for path in sorted(FORTUNES.iterdir()):
        if "." in path.name or path.is_symlink() or not path.is_file():
            continue
        entry: list[str] = []
        for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
            if line.strip() == "%":
                if entry:
                    out.append("\n".join(entry))
                entry = []
            else:
                entry.append(line)
        if entry:
            out.append("\n".join(entry))
    return [t for t in (normalize_text(t) for t in out) if t]


def synthetic(n_docs: int, fortunes: Sequence[str], seed: int = 0) -> tuple[list[str], I64]:
    """Return ``n_docs`` documents in families, and each document's family id (families are contiguous).

    A family is a base document of 30-120 words drawn with the fortunes' empirical (Zipf-like) word
    frequencies plus 0-7 copies of it, each mutated at its own rate in [0, MAX_EDIT_RATE] edits per word
    (a third deletions, a third substitutions, a third insertions, new words drawn from the same law).
    """
    counts = Counter(w for t in fortunes for w in t.split(" "))
    words = np.array(sorted(counts, key=lambda w: (-counts[w], w)), dtype=object)
    cdf = np.cumsum(np.array([counts[w] for w in words], dtype=np.float64))
    cdf /= cdf[-1]
    rng = np.random.default_rng(seed)

    def draw(k: int) -> I64:
        return np.minimum(np.searchsorted(cdf, rng.random(k)), words.size - 1).astype(np.int64)

    docs: list[str] = []
    family: list[int] = []
    fam = 0
    while len(docs) < n_docs:
        base = draw(int(rng.integers(30, 121)))
        docs.append(" ".join(words[base].tolist()))
        family.append(fam)
        for _ in range(int(rng.integers(0, 8))):
            rate = rng.uniform(0.0, MAX_EDIT_RATE)
            r = rng.random(base.size)
            toks = np.where((r >= rate / 3) & (r < 2 * rate / 3), draw(base.size), base)  # substitution
            both = np.stack([toks, draw(base.size)], axis=1)
            # Deletion drops the word; insertion keeps it and adds a drawn word after it.
            keep = np.stack([r >= rate / 3, (r >= 2 * rate / 3) & (r < rate)], axis=1)
            out = both[keep]
            docs.append(" ".join(words[out].tolist()) if out.size else str(words[base[0]]))
            family.append(fam)
        fam += 1
    return docs[:n_docs], np.array(family[:n_docs], dtype=np.int64)


def char_shingles(text: str, n: int = 5) -> list[str]:
    """Return the char n-gram strings of ``text`` the way a Python user feeds datasketch or rensa."""
    if len(text) < n:
        return [text] if text else []
    return [text[i : i + n] for i in range(len(text) - n + 1)]


def _verified_group_pairs(
    order: np.ndarray,
    group_start: np.ndarray,
    group_size: np.ndarray,
    hashes: np.ndarray,
    offsets: np.ndarray,
) -> tuple[set[tuple[int, int]], int]:
    """Verify all (a, b) document pairs inside each token group, streaming to bound memory."""
    truth: set[tuple[int, int]] = set()
    checked = 0
    for size in np.unique(group_size[group_size >= 2]):
        starts_all = group_start[group_size == size]
        ii, jj = np.triu_indices(int(size), k=1)
        per_chunk = max(1, 4_000_000 // ii.size)
        for c in range(0, starts_all.size, per_chunk):
            starts = starts_all[c : c + per_chunk]
            pairs = np.stack([order[starts[:, None] + ii], order[starts[:, None] + jj]], axis=-1).reshape(
                -1, 2
            )
            pairs = np.sort(pairs, axis=1)
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
            checked += pairs.shape[0]
            jac = jaccard_of_pairs(hashes, offsets, pairs)
            truth.update((int(a), int(b)) for a, b in pairs[jac >= THRESHOLD].tolist())
    return truth, checked


def exact_truth(
    texts: Sequence[str], settings: MinHashSettings
) -> tuple[set[tuple[int, int]], dict[str, Any]]:
    """Return every pair with exact Jaccard >= THRESHOLD, by prefix-filter candidates + exact check."""
    hashes, offsets = shingle_hashes(texts, settings)
    sizes = np.diff(offsets)
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), sizes)
    _, inv, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    order = np.lexsort((hashes, counts[inv], doc))  # rarest tokens first inside each document
    del counts
    rank = np.arange(hashes.size) - np.repeat(offsets[:-1], sizes)
    prefix_len = sizes - np.ceil(THRESHOLD * sizes - 1e-9).astype(np.int64) + 1
    keep = order[rank < np.repeat(prefix_len, sizes)]
    del order, rank
    tok, tdoc = inv[keep], doc[keep]
    del inv, doc
    by_tok = np.argsort(tok, kind="stable")
    tok_sorted = tok[by_tok]
    start = np.flatnonzero(np.r_[True, tok_sorted[1:] != tok_sorted[:-1]])
    size = np.diff(np.r_[start, tok_sorted.size])
    truth, checked = _verified_group_pairs(tdoc[by_tok], start, size, hashes, offsets)
    return truth, {"prefix_candidates_checked": checked}


def _codes(pairs: np.ndarray, n: int) -> I64:
    """Return one int64 code ``a * n + b`` per (a, b) pair."""
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1].astype(np.int64)


def _to_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in pairs.tolist()}


def _as_array(pairs: set[tuple[int, int]]) -> I64:
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def family_pairs(family: I64) -> I64:
    """Return every (i, j), i < j, pair of documents in the same family (families are contiguous)."""
    starts = np.flatnonzero(np.r_[True, family[1:] != family[:-1]])
    sizes = np.diff(np.r_[starts, family.size])
    out: list[I64] = [np.zeros((0, 2), dtype=np.int64)]
    for size in np.unique(sizes[sizes >= 2]):
        ii, jj = np.triu_indices(int(size), k=1)
        st = starts[sizes == size][:, None]
        out.append(np.stack([st + ii, st + jj], axis=-1).reshape(-1, 2).astype(np.int64))
    return np.concatenate(out)


def family_truth(
    texts: Sequence[str],
    family: I64,
    settings: MinHashSettings,
    proposed: dict[str, np.ndarray],
    seed: int = 1,
) -> tuple[set[tuple[int, int]], dict[str, Any]]:
    """Return every pair with exact Jaccard >= THRESHOLD of a family-structured corpus, and how it was found.

    Within-family pairs: all enumerated and verified exactly.  Cross-family pairs: the union of the
    pairs in ``proposed`` (e.g. datasketch's and curata's candidates), of a dedicated low-threshold LSH
    (LOW_LSH) and of RANDOM_CROSS_PAIRS seeded random pairs, all verified exactly.
    """
    n = len(texts)
    hashes, offsets = shingle_hashes(texts, settings)
    fam_pairs = family_pairs(family)
    fam_jac = jaccard_of_pairs(hashes, offsets, fam_pairs)
    truth = _to_set(fam_pairs[fam_jac >= THRESHOLD])
    bins = [0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0 + 1e-9]
    hist = np.histogram(fam_jac, bins=bins)[0]
    info: dict[str, Any] = {
        "truth_method": (
            "within-family pairs: all enumerated, exact Jaccard; cross-family pairs: union of a "
            f"low-threshold LSH ({LOW_LSH.num_perm} perms, seed {LOW_LSH.seed}, {LOW_LSH.bands} bands x "
            f"{LOW_LSH.rows} rows, all buckets in full; P(proposed) = 1-(1-J^{LOW_LSH.rows})^{LOW_LSH.bands}"
            f" = {1 - (1 - 0.5**LOW_LSH.rows) ** LOW_LSH.bands:.4f} at J=0.5, miss probability "
            f"{(1 - 0.8**LOW_LSH.rows) ** LOW_LSH.bands:.1e} at J=0.8) and the candidates of "
            f"{', '.join(proposed)}, each verified with exact Jaccard; plus {RANDOM_CROSS_PAIRS:,} seeded "
            "random cross-family pairs verified exactly"
        ),
        "families": int(np.unique(family).size),
        "family_pairs": int(fam_pairs.shape[0]),
        "family_pairs_true": len(truth),
        "family_pair_jaccard_histogram": {
            f"[{lo:g},{min(hi, 1.0):g}{']' if hi > 1 else ')'}": int(c)
            for lo, hi, c in zip(bins[:-1], bins[1:], hist, strict=True)
        },
    }
    del fam_pairs, fam_jac

    # Cross-family candidates from a dedicated low-threshold banding (independent permutations).
    t0 = time.perf_counter()
    keys = band_keys(minhash_signatures(texts, LOW_LSH), LOW_LSH)
    sources: dict[str, I64] = {}
    low: list[I64] = []
    for c in range(0, LOW_LSH.bands, 16):  # a few band columns at a time keeps memory bounded
        cands = candidate_pairs(keys[:, c : c + 16], max_bucket=max(n, 2))
        low.append(cands[family[cands[:, 0]] != family[cands[:, 1]]])
    del keys
    sources["low_threshold_lsh"] = np.unique(np.concatenate(low), axis=0)
    for name, pairs in proposed.items():
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        sources[name] = pairs[family[pairs[:, 0]] != family[pairs[:, 1]]]
    union = np.unique(np.concatenate(list(sources.values())), axis=0)
    union_jac = jaccard_of_pairs(hashes, offsets, union)
    cross_true = union[union_jac >= THRESHOLD]
    true_codes = _codes(cross_true, n)
    info["cross_family"] = {
        "candidates_verified": int(union.shape[0]),
        "candidates_by_source": {k: int(v.shape[0]) for k, v in sources.items()},
        "true_pairs_by_source": {
            k: int(np.isin(_codes(v, n), true_codes).sum()) if v.size else 0 for k, v in sources.items()
        },
        "max_jaccard_of_candidates": float(union_jac.max()) if union_jac.size else 0.0,
        "true_pairs": int(cross_true.shape[0]),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    truth |= _to_set(cross_true)

    # A seeded random sample of cross-family pairs, verified exactly.
    rng = np.random.default_rng(seed)
    sample: list[I64] = []
    got = 0
    while got < RANDOM_CROSS_PAIRS and np.unique(family).size > 1:
        draw = rng.integers(0, n, size=(RANDOM_CROSS_PAIRS, 2), dtype=np.int64)
        draw = np.sort(draw[family[draw[:, 0]] != family[draw[:, 1]]], axis=1)[: RANDOM_CROSS_PAIRS - got]
        sample.append(draw)
        got += draw.shape[0]
    sample_arr = np.concatenate(sample) if sample else np.zeros((0, 2), dtype=np.int64)
    sample_jac = jaccard_of_pairs(hashes, offsets, sample_arr)
    info["random_cross_family_sample"] = {
        "pairs": int(sample_arr.shape[0]),
        "at_or_above_threshold": int((sample_jac >= THRESHOLD).sum()),
        "max_jaccard": float(sample_jac.max()) if sample_jac.size else 0.0,
        "jaccard_p50_p99_p9999": [float(q) for q in np.quantile(sample_jac, [0.5, 0.99, 0.9999])]
        if sample_jac.size
        else [],
    }
    truth |= _to_set(sample_arr[sample_jac >= THRESHOLD])
    return truth, info


def curata_pairs(texts: Sequence[str], settings: MinHashSettings) -> tuple[set[tuple[int, int]], I64]:
    """Return curata's verified pairs and the LSH candidate pairs it checked."""
    sigs = minhash_signatures(texts, settings)
    cands = candidate_pairs(band_keys(sigs, settings))
    hashes, offsets = shingle_hashes(texts, settings)
    jac = jaccard_of_pairs(hashes, offsets, cands)
    return _to_set(cands[jac >= settings.min_jaccard]), cands


def datasketch_pairs(texts: Sequence[str], rows: Sequence[int] | None = None) -> set[tuple[int, int]]:
    """Return the pairs datasketch's default MinHashLSH(0.8, 128) reports among ``rows`` (default all).

    Each document is queried and then inserted, which reports exactly the pairs that share a band
    bucket (the same set as inserting all and querying all) without keeping every MinHash in memory.
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    pairs: set[tuple[int, int]] = set()
    for i in range(len(texts)) if rows is None else rows:
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode("utf-8") for s in char_shingles(texts[i])])
        for j in lsh.query(m):
            pairs.add((min(i, j), max(i, j)))
        lsh.insert(i, m)
    return pairs


def _datasketch_estimate_s(texts: Sequence[str], probe: int = 1000) -> float:
    """Extrapolate datasketch's time on all of ``texts`` from a probe of leading documents."""
    from datasketch import MinHash

    probe = min(probe, len(texts))
    t0 = time.perf_counter()
    for t in texts[:probe]:
        MinHash(num_perm=NUM_PERM).update_batch([s.encode("utf-8") for s in char_shingles(t)])
    return 1.1 * (time.perf_counter() - t0) * len(texts) / max(probe, 1)  # +10% for the LSH index


def precision_recall(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, Any]:
    """Return pair-level precision and recall."""
    tp = len(found & truth)
    return {
        "precision": tp / len(found) if found else 1.0,
        "recall": tp / len(truth) if truth else 1.0,
        "found": len(found),
        "true_pairs": len(truth),
    }


def quality_fortunes(texts: list[str], settings: MinHashSettings) -> dict[str, Any]:
    """Measure curata and datasketch pair precision/recall against exact all-pairs truth on ``texts``."""
    t0 = time.perf_counter()
    truth, info = exact_truth(texts, settings)
    t_truth = time.perf_counter() - t0
    t0 = time.perf_counter()
    found, cands = curata_pairs(texts, settings)
    t_curata = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = datasketch_pairs(texts)
    t_ds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "docs": len(texts),
        "truth_method": "exact all pairs: prefix-filter candidates (rarest tokens first), exact Jaccard",
        "truth_seconds": round(t_truth, 2),
        **info,
        "curata": {
            **precision_recall(found, truth),
            "candidates": int(cands.shape[0]),
            "seconds": round(t_curata, 2),
        },
        "datasketch": {**precision_recall(ds, truth), "docs": len(texts), "seconds": round(t_ds, 2)},
    }
    print(f"[fortunes] done: {json.dumps(out)}", flush=True)
    return out


def quality_synthetic(texts: list[str], family: I64, settings: MinHashSettings) -> dict[str, Any]:
    """Measure curata and datasketch on the family-structured synthetic set (see :func:`family_truth`)."""
    n = len(texts)
    t0 = time.perf_counter()
    found, cands = curata_pairs(texts, settings)
    t_curata = time.perf_counter() - t0
    print(
        f"[synthetic] curata: {len(found)} pairs from {cands.shape[0]} candidates in {t_curata:.1f}s",
        flush=True,
    )

    est = _datasketch_estimate_s(texts)
    subset: np.ndarray | None = None
    if est > DATASKETCH_BUDGET_S:
        fams = np.random.default_rng(2).permutation(np.unique(family))
        sizes = np.bincount(family)[fams]
        chosen = fams[: int(np.searchsorted(np.cumsum(sizes), DATASKETCH_SUBSET_DOCS)) + 1]
        subset = np.flatnonzero(np.isin(family, chosen))
        print(
            f"[synthetic] datasketch estimated at {est:.0f}s on all {n} docs (> {DATASKETCH_BUDGET_S:.0f}s): "
            f"running it on a seeded subset of {chosen.size} families = {subset.size} docs",
            flush=True,
        )
    else:
        print(
            f"[synthetic] datasketch estimated at {est:.0f}s on all {n} docs: running it on all", flush=True
        )
    t0 = time.perf_counter()
    ds = datasketch_pairs(texts, None if subset is None else subset.tolist())
    t_ds = time.perf_counter() - t0
    print(f"[synthetic] datasketch: {len(ds)} pairs in {t_ds:.1f}s", flush=True)

    t0 = time.perf_counter()
    truth, info = family_truth(texts, family, settings, {"datasketch": _as_array(ds), "curata": cands})
    t_truth = time.perf_counter() - t0
    out: dict[str, Any] = {
        "docs": n,
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "truth_seconds": round(t_truth, 2),
        **info,
        "curata": {
            **precision_recall(found, truth),
            "candidates": int(cands.shape[0]),
            "seconds": round(t_curata, 2),
        },
        "datasketch": {
            **precision_recall(ds, truth if subset is None else _restrict(truth, subset)),
            "docs": n if subset is None else int(subset.size),
            "subset": None if subset is None else "seeded random subset of whole families",
            "estimated_full_seconds": round(est, 1),
            "seconds": round(t_ds, 2),
        },
    }
    if subset is not None:
        sub_truth = _restrict(truth, subset)
        out["curata_on_datasketch_subset"] = precision_recall(_restrict(found, subset), sub_truth)
    print(f"[synthetic-{n}] done: {json.dumps(out)}", flush=True)
    return out


def _restrict(pairs: set[tuple[int, int]], rows: np.ndarray) -> set[tuple[int, int]]:
    """Return the pairs with both ends in ``rows``."""
    keep = set(rows.tolist())
    return {(a, b) for a, b in pairs if a in keep and b in keep}


# --- throughput --------------------------------------------------------------------------------------


def _median_rate(fn: Callable[[], object], n_docs: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_docs / statistics.median(times)


def _sig_worker(texts: list[str]) -> np.ndarray:
    return minhash_signatures(texts, MinHashSettings())


def throughput(
    texts: list[str], runs: int, rensa_docs: int, datasketch_docs: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Return docs/s for raw text -> signatures, and the corpus slice each engine was timed on.

    curata (1 process, and a ProcessPoolExecutor(2) over 4 batches) runs on all of ``texts``; rensa on the
    first ``rensa_docs`` and datasketch on the first ``datasketch_docs`` (they are 10-100x slower; the
    documents are in seeded random order so every leading slice has the same length distribution).
    """
    import rensa
    from datasketch import MinHash

    settings = MinHashSettings()
    n = len(texts)

    def corpus(k: int) -> dict[str, float]:
        return {"docs": k, "mean_chars": round(float(np.mean([len(t) for t in texts[:k]])), 1)}

    minhash_signatures(texts[:10], settings)  # compile / load the numba cache outside the timing
    res: dict[str, float] = {}
    used: dict[str, dict[str, float]] = {}
    res["curata_1proc"] = _median_rate(lambda: minhash_signatures(texts, settings), n, runs)
    used["curata_1proc"] = corpus(n)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_sig_worker, [texts[:10], texts[10:20]]))  # warm both workers
        chunk = max(1, math.ceil(n / 4))  # few big batches: pickling cost stays small
        batches = [texts[i : i + chunk] for i in range(0, n, chunk)]
        res["curata_2proc"] = _median_rate(
            lambda: np.concatenate(list(pool.map(_sig_worker, batches))), n, runs
        )
    used["curata_2proc"] = {**corpus(n), "batches": len(batches)}
    r_texts = texts[:rensa_docs]
    d_texts = texts[:datasketch_docs]

    def run_rensa() -> None:
        for t in r_texts:
            m = rensa.RMinHash(NUM_PERM, 0)
            m.update(char_shingles(t))
            m.digest()

    def run_datasketch() -> None:
        for t in d_texts:
            m = MinHash(num_perm=NUM_PERM)
            m.update_batch([s.encode("utf-8") for s in char_shingles(t)])

    res["rensa"] = _median_rate(run_rensa, len(r_texts), runs)
    used["rensa"] = corpus(len(r_texts))
    res["datasketch"] = _median_rate(run_datasketch, len(d_texts), runs)
    used["datasketch"] = corpus(len(d_texts))
    shingled = [char_shingles(t) for t in r_texts]

    def run_rensa_pre() -> None:
        for sh in shingled:
            m = rensa.RMinHash(NUM_PERM, 0)
            m.update(sh)
            m.digest()

    res["rensa_preshingled"] = _median_rate(run_rensa_pre, len(r_texts), runs)
    used["rensa_preshingled"] = corpus(len(r_texts))
    shingled.clear()  # free the pre-made shingles before building datasketch's
    encoded = [[s.encode("utf-8") for s in char_shingles(t)] for t in d_texts]

    def run_datasketch_pre() -> None:
        for enc in encoded:
            m = MinHash(num_perm=NUM_PERM)
            m.update_batch(enc)

    res["datasketch_preshingled"] = _median_rate(run_datasketch_pre, len(d_texts), runs)
    used["datasketch_preshingled"] = corpus(len(d_texts))
    return res, used


def _peak_rss_mib() -> float:
    import resource

    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(self_kib, child_kib) / 1024, 1)


def main() -> None:
    """Run the benchmark and print a results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--synthetic", type=int, default=200_000, help="synthetic documents (default 200k)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    settings = MinHashSettings()
    fortunes = load_fortunes()
    n_synth = 5_000 if args.quick else args.synthetic
    runs = 3
    q_fortunes = fortunes[:3000] if args.quick else fortunes
    t0 = time.perf_counter()
    synth, family = synthetic(n_synth, fortunes, seed=0)
    print(f"generated {n_synth} synthetic docs in {time.perf_counter() - t0:.1f}s", flush=True)
    results: dict[str, Any] = {
        "settings": settings.fingerprint(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "command": "python benchmarks/bench_text_dups.py"
        + (" --quick" if args.quick else "")
        + (f" --synthetic {args.synthetic}" if args.synthetic != 200_000 else ""),
        "quality": {
            "fortunes": quality_fortunes(q_fortunes, settings),
            "synthetic": quality_synthetic(synth, family, settings),
        },
    }
    tp_rensa = min(n_synth, 2_000 if args.quick else 50_000)
    tp_ds = min(n_synth, 1_000 if args.quick else 10_000)
    tp, used = throughput(synth, runs, tp_rensa, tp_ds)
    results["throughput"] = {
        "corpus": "synthetic documents",
        "runs": runs,
        "docs_per_s": tp,
        "timed_on": used,
    }
    ratios = {
        "curata_1proc/datasketch": tp["curata_1proc"] / tp["datasketch"],
        "curata_2proc/datasketch": tp["curata_2proc"] / tp["datasketch"],
        "curata_1proc/rensa": tp["curata_1proc"] / tp["rensa"],
        "curata_2proc/rensa": tp["curata_2proc"] / tp["rensa"],
        "curata_1proc/rensa_preshingled": tp["curata_1proc"] / tp["rensa_preshingled"],
        "curata_2proc/rensa_preshingled": tp["curata_2proc"] / tp["rensa_preshingled"],
        "curata_1proc/datasketch_preshingled": tp["curata_1proc"] / tp["datasketch_preshingled"],
    }
    results["throughput"]["ratios"] = ratios
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    results["peak_rss_mib"] = _peak_rss_mib()

    syn = results["quality"]["synthetic"]
    print("\n== Near-duplicate pairs at exact char-5-gram Jaccard >= 0.8 ==")
    print(f"fortunes truth: {results['quality']['fortunes']['truth_method']}")
    print(f"synthetic truth: {syn['truth_method']}")
    print(
        f"synthetic: {syn['families']} families, mean {syn['mean_chars']} chars/doc, {syn['family_pairs']} "
        f"within-family pairs ({syn['family_pairs_true']} at J >= 0.8), Jaccard histogram "
        f"{syn['family_pair_jaccard_histogram']}"
    )
    cf, rs = syn["cross_family"], syn["random_cross_family_sample"]
    print(
        f"cross-family: {cf['candidates_verified']} candidates verified {cf['candidates_by_source']}, "
        f"max J {cf['max_jaccard_of_candidates']:.3f}, pairs at J >= 0.8: {cf['true_pairs']} "
        f"{cf['true_pairs_by_source']}"
    )
    print(
        f"random cross-family sample: {rs['pairs']} pairs, {rs['at_or_above_threshold']} at J >= 0.8, "
        f"max J {rs['max_jaccard']:.3f}"
    )
    print(
        f"{'corpus':<22}{'method':<12}{'docs':>8}{'precision':>10}{'recall':>9}{'found':>9}{'truth':>9}"
        f"{'cands':>10}{'seconds':>9}"
    )
    for corpus, q in results["quality"].items():
        for method in ("curata", "datasketch"):
            m = q[method]
            print(
                f"{corpus + ' (' + str(q['docs']) + ')':<22}{method:<12}{m.get('docs', q['docs']):>8}"
                f"{m['precision']:>10.4f}{m['recall']:>9.4f}{m['found']:>9}{m['true_pairs']:>9}"
                f"{m.get('candidates', '-'):>10}{m['seconds']:>9.1f}"
            )
    if syn["datasketch"]["subset"]:
        c = syn["curata_on_datasketch_subset"]
        print(
            f"datasketch ran on a {syn['datasketch']['subset']} ({syn['datasketch']['docs']} docs); "
            f"curata on that subset: precision {c['precision']:.4f} recall {c['recall']:.4f}"
        )
    print(
        f"truth seconds: fortunes {results['quality']['fortunes']['truth_seconds']}, "
        f"synthetic {syn['truth_seconds']}"
    )
    print(f"\n== Signature throughput, raw text -> {NUM_PERM} perms, synthetic docs, median of {runs} ==")
    for name, rate in tp.items():
        u = used[name]
        print(f"{name:<26}{rate:>12,.0f} docs/s   ({u['docs']} docs, mean {u['mean_chars']} chars)")
    for name, ratio in ratios.items():
        print(f"{name:<38}{ratio:>8.2f}x")
    print(f"\ntotal {results['total_seconds']}s, peak RSS {results['peak_rss_mib']} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
