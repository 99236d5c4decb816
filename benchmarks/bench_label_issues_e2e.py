"""Benchmark label issues end to end, without given probabilities: sklearn digits as an image folder.

Data: all 1,797 sklearn ``load_digits`` images written as ``CLASS/NNNNN.png`` (8 x 8 grey levels 0-16
scaled to 0-255, bicubic upsampled to 32 x 32, grey PNG; the class is the folder name), after
flipping ``--noise`` (default 0.2) of the labels, a seeded uniform sample of ``round(noise * n)``
records (numpy ``default_rng(seed)``), each to a class drawn uniformly among the nine others.
Truth: the flipped records.

curata: the real audit, ``curata.audit.audit(folder, out, settings=AuditSettings(checks=("label_issue",)))``
with every default (encoder ``auto``, no ``--pred-probs``: curata makes out-of-sample probabilities
itself); the flagged set is the ``label_issue`` rows of ``findings.parquet``. One signal-cache
workspace is shared by the seeds (the pictures are the same, only their folders change), so the
embeddings are computed once; the first seed's audit time includes them.

Peer (same run, same PNGs): cleanlab ``cleanlab.filter.find_label_issues(labels, pred_probs)`` with
defaults, on 5-fold ``cross_val_predict`` (stratified, shuffled with the seed) probabilities of a
scikit-learn ``LogisticRegression(max_iter=5000)`` (otherwise defaults: C=1, lbfgs) on the raw pixels
read back from the PNGs, 32 x 32 grey / 255 (1,024 features), fitted with single-threaded BLAS as
curata's own regression is (two BLAS threads on a busy 2-core machine made such fits 10-50x slower).  Also
printed, for context: the same peer on the original 8 x 8 pixels (64 features, not what a user of
the folder has), and cleanlab on curata's own probabilities (the exact matrix the audit used), which
separates the estimator from the probabilities.

Run ``python benchmarks/bench_label_issues_e2e.py [--seeds 0 1 2] [--noise 0.2]``; figures go to
``benchmarks/results/label_issues_e2e.json``.  Goal (issue 3, benchmark 2): curata F1 >= 0.92.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

RESULTS = Path(__file__).parent / "results" / "label_issues_e2e.json"
GOAL_F1 = 0.92
SIDE = 32


def render(pixels: npt.NDArray[np.floating[Any]]) -> bytes:
    """One 8 x 8 digit (levels 0-16) as a 32 x 32 grey PNG."""
    from PIL import Image

    grey = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    big = Image.fromarray(grey, mode="L").resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return buf.getvalue()


def flip_labels(true: npt.NDArray[np.int64], noise: float, seed: int, k: int) -> npt.NDArray[np.int64]:
    """Given labels: ``round(noise * n)`` seeded records moved to a uniformly drawn other class."""
    rng = np.random.default_rng(seed)
    n = true.size
    chosen = rng.choice(n, size=round(noise * n), replace=False)
    given = true.copy()
    shift = rng.integers(1, k, size=chosen.size)  # 1..k-1: never the true class
    given[chosen] = (true[chosen] + shift) % k
    return given


def write_folder(root: Path, pngs: list[bytes], given: npt.NDArray[np.int64]) -> list[str]:
    """Write ``root/CLASS/NNNNN.png``; return each record's id (its relative path)."""
    ids = []
    for i, (data, label) in enumerate(zip(pngs, given.tolist(), strict=True)):
        rel = f"{label}/{i:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        ids.append(rel)
    return ids


def read_pixels(root: Path, ids: list[str]) -> npt.NDArray[np.float64]:
    """The PNGs as written, decoded back: (n, 32 * 32) grey levels / 255."""
    from PIL import Image

    rows = []
    for rel in ids:
        with Image.open(root / rel) as img:
            rows.append(np.asarray(img.convert("L"), dtype=np.float64).reshape(-1) / 255.0)
    return np.stack(rows)


def scores(flagged: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> dict[str, float]:
    tp = int((flagged & truth).sum())
    precision = tp / max(1, int(flagged.sum()))
    recall = tp / max(1, int(truth.sum()))
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {
        "flagged": int(flagged.sum()),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def cleanlab_lr(
    x: npt.NDArray[np.float64], given: npt.NDArray[np.int64], seed: int
) -> tuple[npt.NDArray[np.bool_], float]:
    """cleanlab defaults on 5-fold cross-validated logistic-regression probabilities; and seconds."""
    from cleanlab.filter import find_label_issues as cl_find
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    with threadpool_limits(limits=1, user_api="blas"):
        probs = cross_val_predict(LogisticRegression(max_iter=5000), x, given, cv=cv, method="predict_proba")
    flags = np.asarray(cl_find(given, probs), dtype=bool)
    return flags, time.perf_counter() - t0


def run_seed(
    seed: int, noise: float, pngs: list[bytes], digits8: npt.NDArray[np.float64], true: Any, work: Path
) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from cleanlab.filter import find_label_issues as cl_find

    import curata.checks.labels as labels_check
    from curata.audit import AuditSettings, audit

    given = flip_labels(true, noise, seed, 10)
    truth = given != true
    data = work / f"digits-seed{seed}"
    ids = write_folder(data, pngs, given)
    position = {rid: i for i, rid in enumerate(ids)}

    # Keep the probabilities the audit's label_issue check uses (only to score cleanlab on them).
    captured: dict[str, Any] = {}
    original = labels_check.shared_pred_probs

    def capture(context: Any) -> Any:
        pred = original(context)
        captured["pred"] = pred
        captured["ids"] = list(context.record_ids)
        return pred

    labels_check.shared_pred_probs = capture  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        result = audit(
            data,
            work / f"out-seed{seed}",
            settings=AuditSettings(checks=("label_issue",)),
            workspace=work / "workspace",
        )
        t_curata = time.perf_counter() - t0
    finally:
        labels_check.shared_pred_probs = original  # type: ignore[assignment]
    status = result.report["checks"]["label_issue"] if "checks" in result.report else {}
    findings = pq.read_table(work / f"out-seed{seed}" / "findings.parquet")
    rows = [r for r in findings.to_pylist() if r["check"] == "label_issue"]
    flagged = np.zeros(true.size, dtype=bool)
    for r in rows:
        flagged[position[r["record_id"]]] = True
    out: dict[str, Any] = {
        "seed": seed,
        "records": int(true.size),
        "flipped": int(truth.sum()),
        "curata": {**scores(flagged, truth), "seconds": round(t_curata, 2)},
        "curata_check_status": status.get("status"),
    }
    if "pred" in captured:
        pred = captured["pred"]
        order = np.array([position[rid] for rid in captured["ids"]])
        probs = np.full((true.size, 10), np.nan)
        probs[order] = pred.probs
        # Columns in class-name order ("0".."9") are the digit classes.
        assert [int(c) for c in pred.classes] == list(range(10))
        ok = np.isfinite(probs).all(axis=1)
        out["curata_probs_source"] = pred.source
        out["curata_probs_accuracy_vs_true"] = round(float((probs[ok].argmax(1) == true[ok]).mean()), 4)
        out["curata_probs_accuracy_vs_given"] = round(float((probs[ok].argmax(1) == given[ok]).mean()), 4)
        cl_ours = np.zeros(true.size, dtype=bool)
        cl_ours[ok] = np.asarray(cl_find(given[ok], probs[ok]), dtype=bool)
        out["cleanlab_on_curata_probs"] = scores(cl_ours, truth)
    x32 = read_pixels(data, ids)
    flags32, t32 = cleanlab_lr(x32, given, seed)
    out["cleanlab_lr_pixels32"] = {**scores(flags32, truth), "seconds": round(t32, 2)}
    flags8, t8 = cleanlab_lr(digits8, given, seed)
    out["cleanlab_lr_pixels8"] = {**scores(flags8, truth), "seconds": round(t8, 2)}
    print(f"[seed {seed}] {json.dumps(out)}", flush=True)
    return out


PEERS = (
    ("curata", "curata audit (default encoder, own probabilities + estimator)"),
    ("cleanlab_lr_pixels32", "cleanlab on 5-fold LR, 32x32 PNG pixels (peer)"),
    ("cleanlab_lr_pixels8", "cleanlab on 5-fold LR, original 8x8 pixels"),
    ("cleanlab_on_curata_probs", "cleanlab on curata's probabilities"),
)


def main() -> None:
    """Run every seed, print the table and the ratios, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="noise seeds (default 0 1 2)")
    ap.add_argument("--noise", type=float, default=0.2, help="fraction of labels flipped (default 0.2)")
    ap.add_argument("--keep", type=Path, default=None, help="write the folders here instead of a temp dir")
    ap.add_argument("--results", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    args = ap.parse_args()
    if not 0.0 < args.noise < 1.0:
        ap.error("--noise must be in (0, 1)")
    import cleanlab
    from sklearn.datasets import load_digits

    digits = load_digits()
    true = digits.target.astype(np.int64)
    pngs = [render(img) for img in digits.images]
    digits8 = digits.data.astype(np.float64) / 16.0
    load_before = [round(x, 2) for x in os.getloadavg()]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="curata-e2e-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        per = [run_seed(s, args.noise, pngs, digits8, true, work) for s in args.seeds]
    summary: dict[str, dict[str, float]] = {}
    for key, _ in PEERS:
        present = [p[key] for p in per if key in p]
        if present:
            summary[key] = {
                f"{stat}_{m}": round(float(fn([p[m] for p in present])), 4)
                for m in ("precision", "recall", "f1")
                for stat, fn in (("mean", statistics.mean), ("median", statistics.median))
            }
    results = {
        "noise": args.noise,
        "seeds": args.seeds,
        "cleanlab_version": cleanlab.__version__,
        "per_seed": per,
        "summary": summary,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    seeds_hdr = "".join(f"{'seed ' + str(s):>20}" for s in args.seeds)
    print(f"\n== Label issues end to end: sklearn digits folder, {args.noise:.0%} of labels flipped ==")
    print(f"{'method':<62}{seeds_hdr}{'mean':>20}{'median F1':>10}")
    print(f"{'':<62}" + f"{'P / R / F1':>20}" * (len(args.seeds) + 1))
    for key, title in PEERS:
        if key not in summary:
            continue
        cells = "".join(
            f"{p[key]['precision']:>8.3f} {p[key]['recall']:>5.3f} {p[key]['f1']:>5.3f}"
            for p in per
            if key in p
        )
        s = summary[key]
        cells += f"{s['mean_precision']:>8.3f} {s['mean_recall']:>5.3f} {s['mean_f1']:>5.3f}"
        print(f"{title:<62}{cells}{s['median_f1']:>10.3f}")
    ours = summary["curata"]["mean_f1"]
    for key, title in PEERS[1:]:
        if key in summary:
            print(f"F1 ratio curata / {title}: {ours / max(summary[key]['mean_f1'], 1e-9):.3f}")
    print(
        f"goal F1 >= {GOAL_F1}: mean {ours:.3f}, min over seeds "
        f"{min(p['curata']['f1'] for p in per):.3f} -> {'met' if ours >= GOAL_F1 else 'NOT met'}"
    )
    print(
        f"audit seconds per seed: {[p['curata']['seconds'] for p in per]} (the first computes the "
        "embeddings, unless --keep names a folder whose workspace already holds them)"
    )
    print(f"load average before {load_before}, after {results['load_average_after']}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
