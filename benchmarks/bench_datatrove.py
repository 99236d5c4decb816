"""Benchmark: curata's text dedup against datatrove's MinHash dedup pipeline on the same 1M documents.

Data: the 1M shuffled synthetic documents of ``bench_scale.py`` (families built from the Debian
fortunes vocabulary), split into 8 Parquet shards that both tools read (datatrove's local executor
runs one task per shard; curata reads the folder).

Same shingling and banding for both: curata's defaults, character 5-grams of the normalised text
(NFKC, casefold, whitespace runs collapsed; a text shorter than 5 characters is one shingle),
128 MinHash permutations of which 21 bands x 6 rows are used. datatrove shingles words by default;
its signature step is subclassed here only to produce the same shingles (``get_shingles``: curata's
normalisation, character 5-grams, each hashed with xxhash64 as datatrove's own xxhash option does
— the ``.encode()`` is needed because xxhash >= 4 no longer takes str). Everything else is
datatrove's: ``MinhashConfig(num_buckets=21, hashes_per_bucket=6)``, 64-bit hashes, the four
stages (signatures, buckets, cluster, filter, which writes the kept documents) on
``LocalPipelineExecutor`` with the same number of worker processes as curata.

curata: ``curata audit SHARDS --checks exact_duplicate,near_duplicate`` (signals, exact groups,
LSH candidates verified with exact Jaccard >= 0.8, findings and reports); both run cold as
subprocesses, wall time and peak PSS / RSS of the process tree measured.

Quality, against exact Jaccard (character 5-gram sets, >= 0.8): both tools end in duplicate
*clusters* (dedup keeps one document of each), so a tool "reports" every pair of documents in one
of its clusters. Truth = every within-family pair plus every cross-family pair either tool
reports, each verified with exact Jaccard (a true cross-family pair neither tool reports is not in
the truth; ``bench_text_dups.py`` found none with a dedicated low-threshold LSH at 200k). curata's
directly verified pairs are scored too.

    python benchmarks/bench_datatrove.py [--docs 1M] [--workers 2] [--runs 1]
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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from curata.lsh import connected_labels, jaccard_of_pairs
from curata.signals.text import MinHashSettings, normalize_text, shingle_hashes

from _measure import run_measured
from bench_scale import dataset, label, loadavg, parse_size

RESULTS = Path(__file__).parent / "results"
PY = sys.executable
SHARDS = 8
THRESHOLD = 0.8
SETTINGS = MinHashSettings()  # char 5-grams, 128 permutations, 21 bands x 6 rows
I64 = npt.NDArray[np.int64]


# --- the datatrove job (run as a subprocess: python bench_datatrove.py --datatrove-job ...) ------


def _char_shingle_step() -> Any:
    """datatrove's signature step, shingling exactly as curata does (see the module docstring)."""
    import xxhash
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    class CharShingleSignature(MinhashDedupSignature):  # type: ignore[misc]
        def get_shingles(self, text: str) -> np.ndarray:
            t = normalize_text(text)
            n = SETTINGS.ngram
            grams = [t[i : i + n] for i in range(len(t) - n + 1)] if len(t) >= n else ([t] if t else [])
            return np.fromiter(
                (xxhash.xxh64_intdigest(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams)
            ).reshape((-1, 1))

    return CharShingleSignature


def datatrove_job(shards: Path, work: Path, workers: int) -> None:
    """Run datatrove's four MinHash stages; write per-stage seconds to ``work/stages.json``."""
    log = open(work / "datatrove.log", "w")  # noqa: SIM115 - the job's whole life
    os.dup2(log.fileno(), 2)  # datatrove logs and progress bars go to the log, not a pipe
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(
        n_grams=SETTINGS.ngram,
        num_buckets=SETTINGS.bands,
        hashes_per_bucket=SETTINGS.rows,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )
    tasks = len(sorted(shards.glob("*.parquet")))

    def reader() -> Any:
        return ParquetReader(str(shards), text_key="text", id_key="id", glob_pattern="*.parquet")

    signature = _char_shingle_step()
    stages = {
        "signatures": ([reader(), signature(output_folder=str(work / "sigs"), config=config)], tasks),
        "buckets": (
            [
                MinhashDedupBuckets(
                    input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config
                )
            ],
            config.num_buckets,
        ),
        "cluster": (
            [
                MinhashDedupCluster(
                    input_folder=str(work / "buckets"),
                    output_folder=str(work / "remove_ids"),
                    config=config,
                    save_cluster_id=True,
                )
            ],
            1,
        ),
        "filter": (
            [
                reader(),
                MinhashDedupFilter(input_folder=str(work / "remove_ids")),
                ParquetWriter(str(work / "deduped")),
            ],
            tasks,
        ),
    }
    seconds: dict[str, float] = {}
    for name, (pipeline, n_tasks) in stages.items():
        t0 = time.perf_counter()
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=n_tasks,
            workers=min(workers, n_tasks),
            logging_dir=str(work / "logs" / name),
            start_method="fork",
        ).run()
        seconds[name] = round(time.perf_counter() - t0, 2)
    (work / "stages.json").write_text(json.dumps(seconds))


# --- data, runs and scoring -----------------------------------------------------------------------


def shard_data(source: Path, folder: Path) -> tuple[Path, I64]:
    """Split ``source`` into SHARDS Parquet files (once); returns the folder and the family of each row."""
    family = np.load(source.with_suffix(".family.npy"))
    if not (folder / "DONE").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        pf = pq.ParquetFile(source)
        groups = pf.metadata.num_row_groups
        per = -(-groups // SHARDS)
        for s in range(SHARDS):
            chosen = list(range(s * per, min(groups, (s + 1) * per)))
            if chosen:
                pq.write_table(
                    pf.read_row_groups(chosen), folder / f"shard-{s:03d}.parquet", row_group_size=100_000
                )
        (folder / "DONE").write_text("ok\n")
    return folder, family


def run_curata(shards: Path, work: Path, workers: int) -> dict[str, Any]:
    """One cold curata audit; returns measures and the output folder."""
    out, ws = work / "curata-out", work / "curata-ws"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ws, ignore_errors=True)
    cmd = [
        PY, "-m", "curata.cli", "audit", str(shards), "--out", str(out), "--workspace", str(ws),
        "--id-column", "id", "--text-column", "text", "--checks", "exact_duplicate,near_duplicate",
        "--workers", str(workers), "-q",
    ]  # fmt: skip
    before = loadavg()
    m = run_measured(cmd)
    return {
        "wall_s": round(m.wall_s, 2),
        "peak_pss_mib": round(m.peak_pss_mib),
        "peak_rss_sum_mib": round(m.peak_rss_mib),
        "load": [before, loadavg()],
        "timings": json.loads((out / "report.json").read_text())["timings"],
        "out": str(out),
    }


def run_datatrove(shards: Path, work: Path, workers: int) -> dict[str, Any]:
    """One cold datatrove run of the four stages, as a subprocess."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    before = loadavg()
    m = run_measured([PY, __file__, "--datatrove-job", str(shards), str(work), "--workers", str(workers)])
    return {
        "wall_s": round(m.wall_s, 2),
        "peak_pss_mib": round(m.peak_pss_mib),
        "peak_rss_sum_mib": round(m.peak_rss_mib),
        "load": [before, loadavg()],
        "stages_s": json.loads((work / "stages.json").read_text()),
        "work": str(work),
    }


def cluster_pairs(labels: I64) -> I64:
    """Every pair (i < j) of rows sharing a label (label -1 = in no cluster), as codes i * n + j."""
    n = labels.size
    rows = np.flatnonzero(labels >= 0)
    order = rows[np.argsort(labels[rows], kind="stable")]
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    sizes = np.diff(np.r_[starts, lab.size])
    out: list[I64] = [np.zeros(0, np.int64)]
    for size in np.unique(sizes[sizes >= 2]):
        ii, jj = np.triu_indices(int(size), k=1)
        members = np.sort(order[starts[sizes == size][:, None] + np.arange(size)], axis=1)
        out.append((members[:, ii] * n + members[:, jj]).ravel())
    return np.unique(np.concatenate(out))


def curata_clusters(out: Path, ids: list[str]) -> tuple[I64, I64]:
    """(cluster label per row or -1, directly verified near pairs as codes) from curata's findings."""
    n = len(ids)
    row_of = {rid: i for i, rid in enumerate(ids)}
    f = pq.read_table(out / "findings.parquet", columns=["check", "record_id", "related_id"]).to_pylist()
    edges = np.array([(row_of[r["record_id"]], row_of[r["related_id"]]) for r in f], np.int64).reshape(-1, 2)
    labels = connected_labels(n, edges)
    in_cluster = np.zeros(n, bool)
    in_cluster[edges.ravel()] = True
    return np.where(in_cluster, labels, -1), edges


def datatrove_clusters(work: Path, offsets: I64, n: int) -> I64:
    """Cluster label per row (-1 when in no cluster) from datatrove's ``.clusters`` files."""
    labels = np.full(n, -1, np.int64)
    for path in sorted((work / "remove_ids").glob("*.clusters")):
        rank = int(path.name.split(".")[0])
        rec = np.fromfile(path, dtype="<u4").reshape(-1, 2).astype(np.int64)
        labels[offsets[rank] + rec[:, 0]] = rec[:, 1]
    return labels


def exact_jaccard(texts: pa.Array, codes: I64, n: int, chunk: int = 400_000) -> npt.NDArray[np.float64]:
    """Exact Jaccard of pairs given as codes i * n + j, in chunks of pairs (shingles of their texts)."""
    out = np.empty(codes.size, np.float64)
    for lo in range(0, codes.size, chunk):
        c = codes[lo : lo + chunk]
        pairs = np.stack([c // n, c % n], axis=1)
        rows = np.unique(pairs)
        norm = [normalize_text(t) for t in texts.take(pa.array(rows)).to_pylist()]
        hashes, offsets = shingle_hashes(norm, SETTINGS)
        out[lo : lo + chunk] = jaccard_of_pairs(hashes, offsets, np.searchsorted(rows, pairs))
    return out


def family_pair_codes(family: I64) -> I64:
    """Every within-family pair (i < j) as codes, families scattered over the rows."""
    return cluster_pairs(family)


def score(pred: I64, truth: I64) -> dict[str, Any]:
    """Precision and recall of predicted pair codes against true pair codes."""
    tp = int(np.intersect1d(pred, truth, assume_unique=True).size)
    return {
        "reported_pairs": int(pred.size),
        "true_positive": tp,
        "precision": round(tp / pred.size, 4) if pred.size else 1.0,
        "recall": round(tp / truth.size, 4) if truth.size else 1.0,
    }


def evaluate(shards: Path, family: I64, curata_out: Path, dt_work: Path) -> dict[str, Any]:
    """Scores of both tools against exact-Jaccard truth (see the module docstring)."""
    table = pa.concat_tables(
        [pq.read_table(p, columns=["id", "text"]) for p in sorted(shards.glob("*.parquet"))]
    )
    counts = [pq.ParquetFile(p).metadata.num_rows for p in sorted(shards.glob("*.parquet"))]
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    n = table.num_rows
    texts = table.column("text").combine_chunks()
    ids = table.column("id").to_pylist()
    cur_labels, cur_edges = curata_clusters(curata_out, ids)
    dt_labels = datatrove_clusters(dt_work, offsets, n)
    cur_pairs = cluster_pairs(cur_labels)
    dt_pairs = cluster_pairs(dt_labels)
    fam = family_pair_codes(family)
    cross = np.setdiff1d(np.union1d(cur_pairs, dt_pairs), fam, assume_unique=True)
    t0 = time.perf_counter()
    fam_j = exact_jaccard(texts, fam, n)
    cross_j = exact_jaccard(texts, cross, n)
    truth = np.union1d(fam[fam_j >= THRESHOLD], cross[cross_j >= THRESHOLD])
    # curata's own verified pairs: its near pairs between exact representatives plus exact copies
    near_direct = cur_edges  # (member, representative) edges of its findings
    direct = np.unique(np.minimum(near_direct[:, 0], near_direct[:, 1]) * n + np.maximum(*near_direct.T))
    return {
        "truth_pairs": int(truth.size),
        "truth": {
            "within_family_pairs_verified": int(fam.size),
            "within_family_true": int((fam_j >= THRESHOLD).sum()),
            "cross_family_pairs_reported_verified": int(cross.size),
            "cross_family_true": int((cross_j >= THRESHOLD).sum()),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "curata_clusters": score(cur_pairs, truth),
        "datatrove_clusters": score(dt_pairs, truth),
        "curata_finding_edges": score(direct, truth),
        "docs_in_clusters": {
            "curata": int((cur_labels >= 0).sum()),
            "datatrove": int((dt_labels >= 0).sum()),
        },
        "docs_removed": {
            "curata": int((cur_labels >= 0).sum() - np.unique(cur_labels[cur_labels >= 0]).size),
            "datatrove": int((dt_labels >= 0).sum() - np.unique(dt_labels[dt_labels >= 0]).size),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", default="1M")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1, help="runs of each tool, alternating (median)")
    parser.add_argument("--quick", action="store_true", help="100k documents (smoke test)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "curata-scale")
    parser.add_argument(
        "--datatrove-job", nargs=2, type=Path, metavar=("SHARDS", "WORK"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.datatrove_job:
        datatrove_job(args.datatrove_job[0], args.datatrove_job[1], args.workers)
        return
    n_docs = 100_000 if args.quick else parse_size(args.docs)
    source = dataset(args.data_dir, n_docs)
    shards, family = shard_data(source, args.data_dir / f"shards-{label(n_docs)}")
    work = Path(tempfile.mkdtemp(prefix="curata-vs-datatrove-", dir=args.data_dir))
    print(f"{n_docs:,} documents in {SHARDS} shards; {args.workers} workers; load {loadavg()}", flush=True)
    cur_runs: list[dict[str, Any]] = []
    dt_runs: list[dict[str, Any]] = []
    try:
        for _ in range(args.runs):  # alternating, so both see the same machine load
            cur_runs.append(run_curata(shards, work, args.workers))
            print(f"curata    {cur_runs[-1]['wall_s']:8.1f} s  load {cur_runs[-1]['load']}", flush=True)
            dt_runs.append(run_datatrove(shards, work / "datatrove", args.workers))
            stages = dt_runs[-1]["stages_s"]
            print(
                f"datatrove {dt_runs[-1]['wall_s']:8.1f} s  {stages}  load {dt_runs[-1]['load']}", flush=True
            )
        quality = evaluate(shards, family, Path(cur_runs[-1]["out"]), Path(dt_runs[-1]["work"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keep = {"curata": cur_runs, "datatrove": dt_runs}
    cur_s = statistics.median(r["wall_s"] for r in cur_runs)
    dt_s = statistics.median(r["wall_s"] for r in dt_runs)
    result = {
        "docs": n_docs,
        "workers": args.workers,
        "shingling": "char 5-grams of curata-normalised text; 21 bands x 6 rows; Jaccard threshold 0.8",
        "curata": keep["curata"],
        "datatrove": keep["datatrove"],
        "curata_s": cur_s,
        "datatrove_s": dt_s,
        "speedup": round(dt_s / cur_s, 2),
        "quality": quality,
    }
    c, d = quality["curata_clusters"], quality["datatrove_clusters"]
    print(f"\n{'tool':<10} {'seconds':>8} {'peak PSS MiB':>12} {'precision':>9} {'recall':>7} {'pairs':>10}")
    for name, secs, runs, s in (
        ("curata", cur_s, keep["curata"], c),
        ("datatrove", dt_s, keep["datatrove"], d),
    ):
        peak = max(r["peak_pss_mib"] for r in runs)
        print(
            f"{name:<10} {secs:>8.1f} {peak:>12,} {s['precision']:>9.4f} {s['recall']:>7.4f} "
            f"{s['reported_pairs']:>10,}"
        )
    print(f"truth: {quality['truth_pairs']:,} pairs; curata is {dt_s / cur_s:.2f}x faster end to end")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "datatrove.json").write_text(json.dumps(result, indent=2))
    print(f"written {RESULTS / 'datatrove.json'}")


if __name__ == "__main__":
    main()
