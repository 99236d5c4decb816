"""Benchmark 3: whole-audit wall time and peak memory on short texts (Parquet) and openclipart images.

Text: N short records built from real Debian fortunes lines (with planted exact and near copies),
audited by `curata audit` on 2 workers, for growing N; the peer is a rensa dedup job (exact
normalised-text hashing + rensa's LSH deduplicator over the same character 5-gram shingles) on the
same records. Images: the openclipart-png PNGs; the peer is imagehash.phash in a plain loop plus a
brute-force Hamming comparison. Every time is the median of several runs; peak memory is the
maximum over the runs, of the whole process tree (workers included): the PSS sum (shared pages
split between the processes sharing them) and, beside it, the RSS sum (which counts pages shared
with forked workers once per worker).

    python benchmarks/bench_audit.py [--quick] [--runs 3] [--sizes 250000,500000,1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from _measure import median_runs

FORTUNES = Path("/usr/share/games/fortunes")
CLIPART = Path("/usr/share/openclipart/png")
RESULTS = Path(__file__).parent / "results"
PY = sys.executable
#: The checks of the foundation issue, which this benchmark measures (the embedding-based checks of
#: later issues have their own benchmarks).
FOUNDATION_CHECKS = (
    "corrupt,empty,missing_label,duplicate_id,exact_duplicate,near_duplicate,"
    "conflicting_labels,split_leakage,contamination"
)


def fortune_lines() -> list[str]:
    """Real short texts: every line of every Debian fortunes file (falls back to sklearn's texts)."""
    lines: list[str] = []
    if FORTUNES.is_dir():
        for f in sorted(FORTUNES.iterdir()):
            if f.suffix or f.is_symlink() or not f.is_file():
                continue
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                line = " ".join(line.split())
                if len(line) >= 20 and line != "%":
                    lines.append(line)
    if not lines:
        from curata.demo import real_paragraphs

        lines = real_paragraphs(20)
    return lines


def build_text(path: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` short records: real lines joined in random pairs, 5% exact and 5% edited copies."""
    rng = random.Random(seed)
    lines = fortune_lines()
    texts: list[str] = []
    while len(texts) < n:
        r = rng.random()
        if texts and r < 0.05:
            texts.append(rng.choice(texts).upper())
        elif texts and r < 0.10:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = rng.choice(words)
            texts.append(" ".join(words))
        else:
            texts.append(f"{rng.choice(lines)} {rng.choice(lines)} #{len(texts)}")
    split = ["test" if rng.random() < 0.1 else "train" for _ in range(n)]
    table = pa.table({"id": [f"t{i}" for i in range(n)], "text": texts, "split": split})
    pq.write_table(table, path, row_group_size=100_000)


PEER_TEXT = r"""
import sys, xxhash, unicodedata, pyarrow.parquet as pq, rensa
texts = pq.read_table(sys.argv[1], columns=["text"]).column("text").to_pylist()
seen = {}
norm = [" ".join(unicodedata.normalize("NFKC", t).casefold().split()) for t in texts]
exact = 0
dedup = rensa.RMinHashDeduplicator(threshold=0.8, num_perm=128, use_lsh=True, num_bands=16)
near = 0
for i, t in enumerate(norm):
    k = xxhash.xxh3_128_hexdigest(t.encode())
    if k in seen:
        exact += 1
        continue
    seen[k] = i
    m = rensa.RMinHash(num_perm=128, seed=42)
    m.update([t[j:j + 5] for j in range(max(1, len(t) - 4))])
    if not dedup.add(str(i), m):
        near += 1
print(exact, near)
"""

PEER_IMAGES = r"""
import sys, numpy as np, imagehash
from pathlib import Path
from PIL import Image
codes = []
for f in sorted(Path(sys.argv[1]).rglob("*.png")):
    try:
        img = Image.open(f).convert("RGBA")
        bg = Image.new("RGBA", img.size, "white"); bg.alpha_composite(img)
        codes.append(int(str(imagehash.phash(bg.convert("L"))), 16))
    except Exception:
        pass
a = np.array(codes, dtype=np.uint64)
pairs = 0
for i in range(len(a)):
    x = a[i + 1:] ^ a[i]
    d = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
    pairs += int((d <= 8).sum())
print(len(codes), pairs)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [20_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 1 if args.quick else args.runs
    results: dict[str, object] = {"runs": runs, "workers": args.workers, "text": [], "images": None}
    work = Path(tempfile.mkdtemp(prefix="curata-bench-"))
    try:
        print(
            f"{'records':>10} {'curata s':>9} {'PSS MiB':>8} {'RSS MiB':>8} "
            f"{'rensa job s':>11} {'rensa MiB':>9} {'ratio':>6}"
        )
        for n in sizes:
            data = work / f"text-{n}.parquet"
            build_text(data, n)
            out = work / f"out-{n}"
            cmd = [
                PY,
                "-m",
                "curata.cli",
                "audit",
                str(data),
                "--out",
                str(out),
                "--workers",
                str(args.workers),
                "--workspace",
                str(work / f"ws-{n}-{{run}}"),
                "--checks",
                FOUNDATION_CHECKS,
                "-q",
            ]
            walls = []
            peak = peak_rss = 0.0
            for run in range(runs):
                shutil.rmtree(out, ignore_errors=True)
                c = [a.replace("{run}", str(run)) for a in cmd]  # fresh cache each run: a cold audit
                m = median_runs(c, 1)
                walls.append(m.wall_s)
                peak, peak_rss = max(peak, m.peak_pss_mib), max(peak_rss, m.peak_rss_mib)
            walls.sort()
            wall = walls[len(walls) // 2]
            peer = median_runs([PY, "-c", PEER_TEXT, str(data)], runs)
            peer_wall, peer_peak = peer.wall_s, peer.peak_pss_mib
            report = json.loads((out / "report.json").read_text())
            row = {
                "records": n,
                "curata_s": round(wall, 2),
                "curata_peak_pss_mib": round(peak),
                "curata_peak_rss_sum_mib": round(peak_rss),
                "rensa_job_s": round(peer_wall, 2),
                "rensa_peak_pss_mib": round(peer_peak),
                "rensa_peak_rss_mib": round(peer.peak_rss_mib),
                "speedup_vs_rensa_job": round(peer_wall / wall, 2),
                "timings": report["timings"],
                "findings": {k: v["count"] for k, v in report["checks"].items() if v["status"] == "ok"},
            }
            results["text"].append(row)  # type: ignore[attr-defined]
            print(
                f"{n:>10,} {wall:>9.1f} {peak:>8.0f} {peak_rss:>8.0f} "
                f"{peer_wall:>11.1f} {peer_peak:>9.0f} {peer_wall / wall:>5.2f}x"
            )
            data.unlink()
        if CLIPART.is_dir():
            out = work / "out-img"
            walls = []
            peak = peak_rss = 0.0
            for run in range(runs):
                shutil.rmtree(out, ignore_errors=True)
                m = median_runs(
                    [
                        PY,
                        "-m",
                        "curata.cli",
                        "audit",
                        str(CLIPART),
                        "--out",
                        str(out),
                        "--workers",
                        str(args.workers),
                        "--workspace",
                        str(work / f"ws-img-{run}"),
                        "--checks",
                        FOUNDATION_CHECKS,
                        "-q",
                    ],
                    1,
                )
                walls.append(m.wall_s)
                peak, peak_rss = max(peak, m.peak_pss_mib), max(peak_rss, m.peak_rss_mib)
            walls.sort()
            wall = walls[len(walls) // 2]
            report = json.loads((out / "report.json").read_text())
            peer = median_runs([PY, "-c", PEER_IMAGES, str(CLIPART)], runs)
            peer_wall, peer_peak = peer.wall_s, peer.peak_pss_mib
            n = report["input"]["num_rows"]
            results["images"] = {
                "images": n,
                "curata_s": round(wall, 2),
                "curata_peak_pss_mib": round(peak),
                "curata_peak_rss_sum_mib": round(peak_rss),
                "imagehash_loop_s": round(peer_wall, 2),
                "imagehash_peak_pss_mib": round(peer_peak),
                "speedup": round(peer_wall / wall, 2),
                "timings": report["timings"],
            }
            print(
                f"openclipart {n:,} images: curata audit {wall:.1f} s, peak PSS {peak:.0f} MiB "
                f"(RSS sum {peak_rss:.0f}); "
                f"imagehash loop + brute-force pairs {peer_wall:.1f} s, peak {peer_peak:.0f} MiB "
                f"({peer_wall / wall:.2f}x)"
            )
        else:
            print("openclipart-png not installed (apt-get install openclipart-png): image audit skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(results, indent=2))
    print(f"written {RESULTS / 'audit.json'}")


if __name__ == "__main__":
    main()
