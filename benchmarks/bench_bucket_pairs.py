"""Benchmark: LSH candidate pairs from band keys, the Ray engine's shuffle against the local engine.

Data: synthetic band keys, 21 bands of uint32 per row (as MinHash 21 x 6 gives), random, with 40%
of the rows copying about half their bands from another random row (near duplicates far apart).
Measured, in this process, for each size: ``RayEngine(workers).bucket_pairs(keys)`` (Ray started
in this process with ``workers`` CPUs; map, reduce and merge tasks) and the local engine's
``curata.lsh.candidate_pairs`` (numpy up to 33.5M keys, DuckDB past it), median of ``--runs`` runs
each, on the same keys; the pairs must be identical. Prints both times, their ratio, and the Ray
time's growth from the smallest size to the largest. Writes ``benchmarks/results/bucket_pairs.json``.

    python benchmarks/bench_bucket_pairs.py [--sizes 1M 3M 10M] [--runs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
BANDS = 21


def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '250k' -> 250_000."""
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def band_keys(n: int, seed: int = 0) -> np.ndarray:
    """(n, BANDS) uint32 keys; 40% of rows share about half their bands with an earlier-drawn row."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**32, size=(n, BANDS), dtype=np.uint64).astype(np.uint32)
    copy = np.flatnonzero(rng.random(n) < 0.4)
    source = rng.integers(0, n, size=copy.size)
    same = rng.random((copy.size, BANDS)) < 0.5
    keys[copy] = np.where(same, keys[source], keys[copy])
    return keys


def timed(fn: object, runs: int) -> tuple[float, list[float], np.ndarray]:
    """Median seconds of ``runs`` calls of ``fn()``, every time, and the last result."""
    times: list[float] = []
    result = np.zeros((0, 2), np.int64)
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "3M", "10M"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "bucket_pairs.json")
    args = parser.parse_args()

    from curata import outofcore
    from curata.engine.ray import RayEngine
    from curata.lsh import candidate_pairs

    engine = RayEngine(workers=args.workers)
    rows = []
    print(f"{'rows':>11} {'ray s':>8} {'local s':>8} {'local/ray':>9} {'pairs':>10}")
    for size in args.sizes:
        n = parse_size(size)
        keys = band_keys(n)
        ray_s, ray_runs, got = timed(lambda k=keys: engine.bucket_pairs(k), args.runs)
        with outofcore.configured():
            local_s, local_runs, want = timed(lambda k=keys: candidate_pairs(k), args.runs)
        if not np.array_equal(got, want):
            raise SystemExit(f"{size}: the Ray engine's pairs differ from candidate_pairs'")
        rows.append(
            {
                "rows": n,
                "ray_s": round(ray_s, 2),
                "ray_runs": [round(t, 2) for t in ray_runs],
                "local_s": round(local_s, 2),
                "local_runs": [round(t, 2) for t in local_runs],
                "pairs": len(got),
            }
        )
        print(f"{n:>11,} {ray_s:>8.1f} {local_s:>8.1f} {local_s / ray_s:>8.2f}x {len(got):>10,}")
        del keys, got, want
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last["ray_s"] / first["ray_s"]
        print(
            f"ray: time({args.sizes[-1]}) / time({args.sizes[0]}) = {growth:.2f} for "
            f"{last['rows'] / first['rows']:.0f}x the rows"
        )
    RESULTS.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"workers": args.workers, "runs": args.runs, "rows": rows}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
