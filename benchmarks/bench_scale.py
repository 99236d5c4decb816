"""Benchmark: text dedup (exact + MinHash near duplicates) at 1M, 3M and 10M documents, whole audit.

Data: synthetic documents built from real text, generated streaming (the generator holds one chunk
of families and one shuffle bucket at a time, never the corpus). Families as in
``bench_text_dups.py``: a base document of 30-120 words drawn with the word frequencies of the Debian
fortunes (``/usr/share/games/fortunes``) plus 0-7 copies, each mutated at its own rate in [0, 0.2]
edits per word (a third deletions, a third substitutions, a third insertions). Unlike there, the
documents are then shuffled over the whole file (an external shuffle through spill buckets), so
duplicates sit far apart, as in crawled data, and nothing benefits from families being contiguous.
Written as Parquet (``id``, ``text``) in 100,000-row groups; each document's family is kept in a
side file ``<data>.family.npy`` (truth for ``bench_datatrove.py``). Files are cached in ``--data-dir``
by size and seed.

Measured: ``curata audit DATA --checks exact_duplicate,near_duplicate`` as a subprocess per size
(fresh workspace: a cold audit), wall time and peak PSS / RSS of the process tree (sampled every
200 ms): the PSS sum, the RSS sum, the largest RSS of one process (``max RSS``: under Ray often a
worker, whose RSS counts the object-store pages it maps) and the RSS of the audit's own process
(``driver``), and anonymous RSS (heap, not memory-mapped files) of the driver (``drv anon``) and
summed over the tree (``anon sum``: copy-on-write pages of forked workers count once per process),
with ``--engine local`` and, with ``--with-ray`` when the Ray engine exists, ``--engine ray``.
``--memory-cap MIB`` runs each audit inside a memory cgroup of MIB MiB (page cache included;
needs root): the kernel reclaims file pages to stay under it and kills the run when its anonymous
memory does not fit; ``cgroup`` is the most the cgroup held. Prints a table and
time(largest)/time(smallest); writes ``benchmarks/results/scale.json``.

    python benchmarks/bench_scale.py [--sizes 1M 3M 10M] [--runs 1] [--with-ray] [--quick] [--memory-cap MIB]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from _measure import memory_cap, run_measured

FORTUNES = Path("/usr/share/games/fortunes")
RESULTS = Path(__file__).parent / "results"
PY = sys.executable
ROW_GROUP = 100_000
#: Documents per spill bucket of the external shuffle (one bucket is held in memory at a time).
SHUFFLE_BUCKET_DOCS = 250_000
MAX_EDIT_RATE = 0.2

I64 = npt.NDArray[np.int64]


def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '250k' -> 250_000, '1500' -> 1500."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def label(n: int) -> str:
    """1_000_000 -> '1M', 250_000 -> '250k'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def fortune_vocabulary() -> tuple[np.ndarray, np.ndarray]:
    """Words of the Debian fortunes (normalised: casefolded, split on whitespace) and their CDF."""
    counts: Counter[str] = Counter()
    if FORTUNES.is_dir():
        for path in sorted(FORTUNES.iterdir()):
            if "." in path.name or path.is_symlink() or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            counts.update(w for w in text.casefold().split() if w != "%")
    if not counts:
        raise SystemExit("Debian fortunes not found: apt-get install -y fortunes")
    words = np.array(sorted(counts, key=lambda w: (-counts[w], w)), dtype=object)
    cdf = np.cumsum(np.array([counts[w] for w in words], dtype=np.float64))
    return words, cdf / cdf[-1]


def family_chunks(n_docs: int, seed: int, chunk_families: int = 5_000) -> Iterator[tuple[list[str], I64]]:
    """Yield (documents, family ids) a chunk of families at a time, ``n_docs`` documents in all.

    Vectorised over the chunk: every copy's words are mutated in one pass over a flat token array.
    """
    words, cdf = fortune_vocabulary()
    word_list = words.tolist()
    # Inverse-CDF lookup table (2**22 cells): a draw is one random index, not a binary search.
    table = np.minimum(np.searchsorted(cdf, (np.arange(1 << 22) + 0.5) / (1 << 22)), words.size - 1)
    rng = np.random.default_rng(seed)

    def draw(shape: int | tuple[int, int]) -> I64:
        return table[rng.integers(0, 1 << 22, size=shape)]

    made = 0
    fam0 = 0
    while made < n_docs:
        lens = rng.integers(30, 121, size=chunk_families)
        copies = rng.integers(0, 8, size=chunk_families)
        base_off = np.zeros(chunk_families + 1, dtype=np.int64)
        np.cumsum(lens, out=base_off[1:])
        base = draw(int(base_off[-1]))
        # Documents of the chunk: each family's base, then its copies.
        docs_per_fam = 1 + copies
        doc_fam = np.repeat(np.arange(chunk_families), docs_per_fam)
        is_copy = np.ones(doc_fam.size, dtype=bool)
        first = np.zeros(chunk_families, dtype=np.int64)
        np.cumsum(docs_per_fam[:-1], out=first[1:])
        is_copy[first] = False
        rate = np.where(is_copy, rng.uniform(0.0, MAX_EDIT_RATE, size=doc_fam.size), 0.0)
        # Flat token positions: every document repeats its family's base words.
        dlen = lens[doc_fam]
        tok_doc = np.repeat(np.arange(doc_fam.size), dlen)
        tok_start = np.repeat(base_off[doc_fam], dlen)
        within = np.arange(tok_doc.size) - np.repeat(np.cumsum(dlen) - dlen, dlen)
        toks = base[tok_start + within]
        r = rng.random(toks.size)
        rt = rate[tok_doc]
        sub = (r >= rt / 3) & (r < 2 * rt / 3)
        draws = draw((toks.size, 2))
        toks = np.where(sub, draws[:, 0], toks)
        keep = np.stack([r >= rt / 3, (r >= 2 * rt / 3) & (r < rt)], axis=1)  # deletion / insertion
        both = np.stack([toks, draws[:, 1]], axis=1)
        out = both[keep]
        out_doc = np.repeat(tok_doc, 2).reshape(-1, 2)[keep]
        counts = np.bincount(out_doc, minlength=doc_fam.size)
        bounds = np.zeros(doc_fam.size + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        flat = words[out].tolist()
        texts = []
        for d in range(doc_fam.size):
            a, b = int(bounds[d]), int(bounds[d + 1])
            # A copy that lost every word keeps its base's first word (never an empty document).
            texts.append(" ".join(flat[a:b]) if b > a else word_list[int(base[base_off[doc_fam[d]]])])
        take = min(len(texts), n_docs - made)
        yield texts[:take], (doc_fam[:take] + fam0).astype(np.int64)
        made += take
        fam0 += chunk_families


def build_data(path: Path, n_docs: int, seed: int = 0) -> None:
    """Write ``n_docs`` shuffled synthetic documents to ``path`` (+ ``.family.npy``), streaming."""
    n_buckets = max(1, -(-n_docs // SHUFFLE_BUCKET_DOCS))
    rng = np.random.default_rng(seed + 1)
    spill = Path(tempfile.mkdtemp(prefix="curata-shuffle-", dir=path.parent))
    schema = pa.schema([("gen", pa.int64()), ("family", pa.int64()), ("text", pa.string())])
    writers = [pa.ipc.new_stream(str(spill / f"b{b:05d}.arrow"), schema) for b in range(n_buckets)]
    try:
        gen = 0
        for texts, fam in family_chunks(n_docs, seed):
            bucket = rng.integers(0, n_buckets, size=len(texts))
            order = np.argsort(bucket, kind="stable")
            ids = np.arange(gen, gen + len(texts), dtype=np.int64)
            gen += len(texts)
            table = pa.table({"gen": ids, "family": fam, "text": pa.array(texts, pa.string())})
            table = table.take(pa.array(order))
            starts = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
            for b in range(n_buckets):
                if starts[b + 1] > starts[b]:
                    writers[b].write_table(table.slice(int(starts[b]), int(starts[b + 1] - starts[b])))
        for w in writers:
            w.close()
        tmp = path.with_suffix(".tmp")
        families: list[I64] = []
        out_schema = pa.schema([("id", pa.string()), ("text", pa.string())])
        with pq.ParquetWriter(tmp, out_schema, compression="zstd") as out:
            pending: list[pa.Table] = []
            pending_rows = 0
            for b in range(n_buckets):
                with pa.ipc.open_stream(str(spill / f"b{b:05d}.arrow")) as reader:
                    part = reader.read_all()
                (spill / f"b{b:05d}.arrow").unlink()
                part = part.take(pa.array(rng.permutation(part.num_rows)))
                families.append(part.column("family").to_numpy())
                ids = pa.array([f"d{g}" for g in part.column("gen").to_numpy().tolist()], pa.string())
                pending.append(pa.table({"id": ids, "text": part.column("text")}))
                pending_rows += part.num_rows
                while pending_rows >= ROW_GROUP or (b == n_buckets - 1 and pending_rows):
                    merged = pa.concat_tables(pending)
                    out.write_table(merged.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
                    rest = merged.slice(ROW_GROUP)
                    pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        np.save(path.with_suffix(".family.npy"), np.concatenate(families))
        tmp.rename(path)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def dataset(data_dir: Path, n_docs: int, seed: int = 0) -> Path:
    """The cached data file for ``n_docs`` documents (built on first use)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"scale-{label(n_docs)}-s{seed}.parquet"
    if not path.exists():
        t0 = time.perf_counter()
        build_data(path, n_docs, seed)
        print(f"built {path} ({n_docs:,} docs) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def loadavg() -> str:
    """The 1/5/15-minute load averages (the machine is shared: printed beside every timing)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def ray_engine_available() -> bool:
    """Whether this curata has a Ray engine and Ray is installed."""
    try:
        import ray  # noqa: F401

        from curata.engine import ENGINES  # type: ignore[attr-defined]
    except ImportError:
        return False
    return "ray" in ENGINES


def audit_once(
    data: Path, work: Path, engine: str, workers: int, cap_mib: int | None = None
) -> dict[str, Any]:
    """One cold ``curata audit`` (fresh workspace) measured as a subprocess tree, inside a memory
    cgroup of ``cap_mib`` MiB when given (``completed`` False when the kernel killed it)."""
    out, ws = work / "out", work / "ws"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ws, ignore_errors=True)
    cmd = [
        PY, "-m", "curata.cli", "audit", str(data),
        "--out", str(out), "--workspace", str(ws),
        "--id-column", "id", "--text-column", "text",
        "--checks", "exact_duplicate,near_duplicate",
        "--engine", engine, "--workers", str(workers), "-q",
    ]  # fmt: skip
    env = dict(os.environ)
    load_before = loadavg()
    with memory_cap(cap_mib) as cap:
        # Sampling /proc costs CPU; phases last seconds.
        m = run_measured(
            cmd, env=env, poll_s=0.2, preexec_fn=cap.join if cap else None, allow_failure=cap is not None
        )
        capped = {} if cap is None else {"cap_mib": cap_mib, "cgroup_peak_mib": round(cap.peak_mib())}
        if cap is not None and m.returncode not in (0, 1):
            return {
                "completed": False,
                "returncode": m.returncode,
                "oom_kills": cap.oom_kills(),
                "wall_s": round(m.wall_s, 2),
                **capped,
            }
    report = json.loads((out / "report.json").read_text())
    checks = report["checks"]
    return {
        "completed": True,
        **capped,
        "wall_s": round(m.wall_s, 2),
        "peak_pss_mib": round(m.peak_pss_mib),
        "peak_rss_sum_mib": round(m.peak_rss_mib),
        "peak_process_rss_mib": round(m.peak_max_rss_mib),
        "peak_driver_rss_mib": round(m.peak_main_rss_mib),
        "peak_driver_anon_mib": round(m.peak_main_anon_mib),
        "peak_anon_mib": round(m.peak_anon_mib),
        "load_before": load_before,
        "load_after": loadavg(),
        "timings": report["timings"],
        "findings": {k: checks[k]["count"] for k in ("exact_duplicate", "near_duplicate")},
        "check_seconds": {k: checks[k]["seconds"] for k in ("exact_duplicate", "near_duplicate")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="+", default=["1M", "3M", "10M"], help="document counts (1M, 250k...)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per size and engine (median reported)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--with-ray", action="store_true", help="also run --engine ray (when it exists)")
    parser.add_argument("--ray-only", action="store_true", help="run --engine ray only (implies --with-ray)")
    parser.add_argument("--quick", action="store_true", help="100k and 300k documents, one run (smoke test)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "curata-scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-cap",
        type=int,
        metavar="MIB",
        help="run every audit in a memory cgroup of MIB MiB, page cache included (needs root)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    sizes = [100_000, 300_000] if args.quick else [parse_size(s) for s in args.sizes]
    runs = 1 if args.quick else args.runs
    engines = [] if args.ray_only else ["local"]
    if args.with_ray or args.ray_only:
        if ray_engine_available():
            engines.append("ray")
        else:
            print("--with-ray: no Ray engine in this curata (or ray not installed); local only")
    free = shutil.disk_usage(args.data_dir if args.data_dir.exists() else Path(tempfile.gettempdir())).free
    print(f"data in {args.data_dir} ({free / 2**30:.0f} GiB free); {args.workers} workers; load {loadavg()}")
    results: dict[str, Any] = {
        "workers": args.workers,
        "runs": runs,
        "cpus": os.cpu_count(),
        "checks": "exact_duplicate,near_duplicate",
        "data": "synthetic families from Debian fortunes vocabulary, shuffled; see bench_scale.py",
        "rows": [],
    }
    header = (
        f"{'docs':>11} {'engine':>6} {'wall s':>8} {'peak PSS MiB':>12} {'RSS sum MiB':>11} {'max RSS':>7} "
        f"{'driver':>7} {'drv anon':>8} {'anon sum':>8} {'cgroup':>6} "
        f"{'signals s':>9} {'checks s':>8} {'exact':>9} {'near':>9}  load before/after"
    )
    print(header, flush=True)
    for n in sizes:
        data = dataset(args.data_dir, n, args.seed)
        for engine in engines:
            with tempfile.TemporaryDirectory(prefix="curata-scale-run-", dir=args.data_dir) as tmp:
                done = [
                    audit_once(data, Path(tmp), engine, args.workers, args.memory_cap) for _ in range(runs)
                ]
            failed = [d for d in done if not d["completed"]]
            if failed:
                f = failed[0]
                results["rows"].append({"docs": n, "engine": engine, **f})
                print(
                    f"{n:>11,} {engine:>6} killed under the {args.memory_cap} MiB cap "
                    f"after {f['wall_s']:.1f} s (exit {f['returncode']}, {f['oom_kills']} OOM kills, "
                    f"cgroup peak {f['cgroup_peak_mib']:,} MiB)",
                    flush=True,
                )
                continue
            best = sorted(done, key=lambda d: d["wall_s"])[len(done) // 2]
            row = {
                "docs": n,
                "engine": engine,
                "wall_s": statistics.median(d["wall_s"] for d in done),
                "wall_s_runs": [d["wall_s"] for d in done],
                "peak_pss_mib": max(d["peak_pss_mib"] for d in done),
                "peak_rss_sum_mib": max(d["peak_rss_sum_mib"] for d in done),
                "peak_process_rss_mib": max(d["peak_process_rss_mib"] for d in done),
                "peak_driver_rss_mib": max(d["peak_driver_rss_mib"] for d in done),
                "peak_anon_mib": max(d["peak_anon_mib"] for d in done),
                "peak_driver_anon_mib": max(d["peak_driver_anon_mib"] for d in done),
                **(
                    {"cap_mib": args.memory_cap, "cgroup_peak_mib": max(d["cgroup_peak_mib"] for d in done)}
                    if args.memory_cap
                    else {}
                ),
                "timings": best["timings"],
                "findings": best["findings"],
                "check_seconds": best["check_seconds"],
                "load": [(d["load_before"], d["load_after"]) for d in done],
            }
            row["us_per_doc"] = round(row["wall_s"] / n * 1e6, 2)
            row["pss_bytes_per_doc"] = round(row["peak_pss_mib"] * 2**20 / n, 1)
            results["rows"].append(row)
            t = row["timings"]
            print(
                f"{n:>11,} {engine:>6} {row['wall_s']:>8.1f} {row['peak_pss_mib']:>12,} "
                f"{row['peak_rss_sum_mib']:>11,} {row['peak_process_rss_mib']:>7,} "
                f"{row['peak_driver_rss_mib']:>7,} {row['peak_driver_anon_mib']:>8,} "
                f"{row['peak_anon_mib']:>8,} "
                f"{row.get('cgroup_peak_mib', '-'):>6} "
                f"{t['signals_s']:>9.1f} {t['checks_s']:>8.1f} "
                f"{row['findings']['exact_duplicate']:>9,} {row['findings']['near_duplicate']:>9,}  "
                f"{done[0]['load_before']} / {done[-1]['load_after']}",
                flush=True,
            )
    for engine in engines:
        rows = [r for r in results["rows"] if r["engine"] == engine and r.get("completed", True)]
        if len(rows) >= 2:
            small, large = rows[0], rows[-1]
            ratio = large["wall_s"] / small["wall_s"]
            results[f"time_ratio_{engine}"] = {
                "sizes": [small["docs"], large["docs"]],
                "size_ratio": large["docs"] / small["docs"],
                "time_ratio": round(ratio, 2),
            }
            print(
                f"{engine}: time({label(large['docs'])}) / time({label(small['docs'])}) = {ratio:.2f} "
                f"for {large['docs'] / small['docs']:.0f}x the documents"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
