"""Benchmark text near-duplicate detection: quality against exact truth and signature throughput.

Quality: pairs with exact char-5-gram Jaccard >= 0.8 on (a) the Debian fortunes corpus and (b) seeded
synthetic mutated documents.  curata = candidate_pairs + exact verification; datasketch = its default
``MinHashLSH(threshold=0.8, num_perm=128)`` fed with the same shingle strings (no verification, which is
how it is normally used).  Truth is exact all-pairs, computed with a prefix filter (rarest-first token
order): a pair with Jaccard >= t must share one of the first ``|A| - ceil(t |A|) + 1`` tokens of each
set, so verifying every pair that shares a prefix token finds all of them without the n^2 loop.

Throughput: raw normalised text -> signatures, medians of >= 3 runs, for curata (one process and a
2-process pool), rensa and datasketch (their Python tokenisation included, and a pre-made-shingle
variant).  Run ``python benchmarks/bench_text_dups.py [--quick]``; figures go to
``benchmarks/results/text_dups.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from curata.lsh import candidate_pairs, jaccard_of_pairs
from curata.signals.text import MinHashSettings, band_keys, minhash_signatures, normalize_text, shingle_hashes

FORTUNES = Path("/usr/share/games/fortunes")
RESULTS = Path(__file__).parent / "results" / "text_dups.json"
THRESHOLD = 0.8
NUM_PERM = 128


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


def synthetic(n_docs: int, vocab: list[str], seed: int = 0) -> list[str]:
    """Return ``n_docs`` documents: random base documents plus mutated copies (families of 1-8)."""
    rng = random.Random(seed)
    docs: list[str] = []
    while len(docs) < n_docs:
        base = [rng.choice(vocab) for _ in range(rng.randint(20, 80))]
        docs.append(" ".join(base))
        for _ in range(rng.randint(0, 7)):
            rate = rng.uniform(0.0, 0.12)  # word edits per word: Jaccard spread over ~0.5-1.0
            words: list[str] = []
            for w in base:
                r = rng.random()
                if r < rate / 3:
                    continue  # deletion
                if r < 2 * rate / 3:
                    words.append(rng.choice(vocab))  # substitution
                elif r < rate:
                    words.extend((w, rng.choice(vocab)))  # insertion
                else:
                    words.append(w)
            docs.append(" ".join(words) or base[0])
    return docs[:n_docs]


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


def curata_pairs(texts: Sequence[str], settings: MinHashSettings) -> tuple[set[tuple[int, int]], int]:
    """Return curata's verified pairs and the number of LSH candidates it checked."""
    sigs = minhash_signatures(texts, settings)
    cands = candidate_pairs(band_keys(sigs, settings))
    hashes, offsets = shingle_hashes(texts, settings)
    jac = jaccard_of_pairs(hashes, offsets, cands)
    return {(int(a), int(b)) for a, b in cands[jac >= settings.min_jaccard].tolist()}, int(cands.shape[0])


def datasketch_pairs(texts: Sequence[str]) -> set[tuple[int, int]]:
    """Return the pairs datasketch's default MinHashLSH(0.8, 128) reports (query every doc)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    hashes = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode("utf-8") for s in char_shingles(t)])
        lsh.insert(i, m)
        hashes.append(m)
    pairs: set[tuple[int, int]] = set()
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    return pairs


def precision_recall(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    """Return pair-level precision and recall."""
    tp = len(found & truth)
    return {
        "precision": tp / len(found) if found else 1.0,
        "recall": tp / len(truth) if truth else 1.0,
        "found": len(found),
        "true_pairs": len(truth),
    }


def quality(name: str, texts: list[str], settings: MinHashSettings, with_datasketch: bool) -> dict[str, Any]:
    """Measure curata (and datasketch) pair precision/recall against exact truth on ``texts``."""
    t0 = time.perf_counter()
    truth, info = exact_truth(texts, settings)
    t_truth = time.perf_counter() - t0
    t0 = time.perf_counter()
    found, n_cand = curata_pairs(texts, settings)
    t_curata = time.perf_counter() - t0
    out: dict[str, Any] = {
        "docs": len(texts),
        "truth_seconds": round(t_truth, 2),
        **info,
        "curata": {**precision_recall(found, truth), "candidates": n_cand, "seconds": round(t_curata, 2)},
    }
    if with_datasketch:
        t0 = time.perf_counter()
        ds = datasketch_pairs(texts)
        out["datasketch"] = {**precision_recall(ds, truth), "seconds": round(time.perf_counter() - t0, 2)}
    print(f"[{name}] done: {json.dumps(out)}", flush=True)
    return out


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


def throughput(texts: list[str], runs: int) -> dict[str, float]:
    """Return docs/s for raw text -> signatures for curata, rensa and datasketch on ``texts``."""
    import rensa
    from datasketch import MinHash

    settings = MinHashSettings()
    n = len(texts)
    minhash_signatures(texts[:10], settings)  # compile / load the numba cache outside the timing
    res: dict[str, float] = {}
    res["curata_1proc"] = _median_rate(lambda: minhash_signatures(texts, settings), n, runs)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_sig_worker, [texts[:10], texts[10:20]]))  # warm both workers
        chunk = max(1, math.ceil(n / 4))  # few big batches: pickling cost stays small
        batches = [texts[i : i + chunk] for i in range(0, n, chunk)]
        res["curata_2proc"] = _median_rate(
            lambda: np.concatenate(list(pool.map(_sig_worker, batches))), n, runs
        )

    def run_rensa() -> None:
        for t in texts:
            m = rensa.RMinHash(NUM_PERM, 0)
            m.update(char_shingles(t))
            m.digest()

    def run_datasketch() -> None:
        for t in texts:
            m = MinHash(num_perm=NUM_PERM)
            m.update_batch([s.encode("utf-8") for s in char_shingles(t)])

    res["rensa"] = _median_rate(run_rensa, n, runs)
    res["datasketch"] = _median_rate(run_datasketch, n, runs)
    shingled = [char_shingles(t) for t in texts]
    encoded = [[s.encode("utf-8") for s in sh] for sh in shingled]

    def run_rensa_pre() -> None:
        for sh in shingled:
            m = rensa.RMinHash(NUM_PERM, 0)
            m.update(sh)
            m.digest()

    def run_datasketch_pre() -> None:
        for enc in encoded:
            m = MinHash(num_perm=NUM_PERM)
            m.update_batch(enc)

    res["rensa_preshingled"] = _median_rate(run_rensa_pre, n, runs)
    res["datasketch_preshingled"] = _median_rate(run_datasketch_pre, n, runs)
    return res


def main() -> None:
    """Run the benchmark and print a results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--synthetic", type=int, default=200_000, help="synthetic documents (default 200k)")
    args = parser.parse_args()
    settings = MinHashSettings()
    fortunes = load_fortunes()
    n_synth = 5_000 if args.quick else args.synthetic
    runs = 3
    if args.quick:
        fortunes = fortunes[:3000]
    vocab = sorted({w for t in fortunes for w in t.split(" ")})
    synth = synthetic(n_synth, vocab, seed=0)
    results: dict[str, Any] = {
        "settings": settings.fingerprint(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "quality": {
            "fortunes": quality("fortunes", fortunes, settings, with_datasketch=True),
            "synthetic": quality(f"synthetic-{n_synth}", synth, settings, with_datasketch=True),
        },
    }
    tp_docs = fortunes[:2000] if args.quick else fortunes
    tp = throughput(tp_docs, runs)
    results["throughput"] = {"docs": len(tp_docs), "runs": runs, "docs_per_s": tp}
    ratios = {
        "curata_1proc/datasketch": tp["curata_1proc"] / tp["datasketch"],
        "curata_2proc/datasketch": tp["curata_2proc"] / tp["datasketch"],
        "curata_1proc/rensa": tp["curata_1proc"] / tp["rensa"],
        "curata_2proc/rensa": tp["curata_2proc"] / tp["rensa"],
        "curata_1proc/rensa_preshingled": tp["curata_1proc"] / tp["rensa_preshingled"],
        "curata_1proc/datasketch_preshingled": tp["curata_1proc"] / tp["datasketch_preshingled"],
    }
    results["throughput"]["ratios"] = ratios

    print("\n== Near-duplicate pairs at exact char-5-gram Jaccard >= 0.8 ==")
    print(f"{'corpus':<22}{'method':<12}{'precision':>10}{'recall':>9}{'found':>9}{'truth':>9}{'seconds':>9}")
    for corpus, q in results["quality"].items():
        for method in ("curata", "datasketch"):
            m = q[method]
            print(
                f"{corpus + ' (' + str(q['docs']) + ')':<22}{method:<12}{m['precision']:>10.4f}"
                f"{m['recall']:>9.4f}{m['found']:>9}{m['true_pairs']:>9}{m['seconds']:>9.1f}"
            )
    print(
        f"\n== Signature throughput, raw text -> {NUM_PERM} perms, {len(tp_docs)} fortunes, "
        f"median of {runs} =="
    )
    for name, rate in tp.items():
        print(f"{name:<26}{rate:>12,.0f} docs/s")
    for name, ratio in ratios.items():
        print(f"{name:<38}{ratio:>8.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
