"""Peak memory of each step of a dedup audit, in the audit's own process.

Runs ``curata audit DATA --checks exact_duplicate,near_duplicate`` in this process (Arrow on the
memory pool the command line picks) and samples ``RssAnon`` / ``RssFile`` from
``/proc/self/status`` every 20 ms, attributing each sample to the step running at that moment
(reading, signals, rank, exact groups, LSH candidate pairs, verification, each check, the report
and its examples). ``X (after Y)`` is the rest of step X once its sub-step Y returned, ``after
Y`` the time between Y and the next named step. The process-pool workers are not counted: this
is the driver's share.

    python benchmarks/memory_steps.py /tmp/curata-scale/scale-10M-s0.parquet

(``bench_scale.py`` builds those files.)
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field, in KiB (0 where it is missing)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class StepSampler:
    """Samples this process's anonymous and file-backed RSS, keeping each step's peak."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.step = "start"
        self.peaks: dict[str, list[int]] = {}
        self._open: list[str] = []
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            anon, file = status_kib("RssAnon"), status_kib("RssFile")
            peak = self.peaks.setdefault(self.step, [0, 0])
            peak[0], peak[1] = max(peak[0], anon), max(peak[1], file)
            time.sleep(self.interval_s)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (after one last interval)."""
        self._stop.set()
        self._thread.join()

    def wrap(self, owner: Any, name: str, step: str) -> None:
        """Replace ``owner.name`` by a wrapper that marks ``step`` while it runs."""
        fn: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(fn)
        def marked(*args: Any, **kwargs: Any) -> Any:
            self._open.append(step)
            self.step = step
            try:
                return fn(*args, **kwargs)
            finally:
                self._open.pop()
                # Back in the enclosing step (its rest after this one), or between steps.
                self.step = f"{self._open[-1]} (after {step})" if self._open else f"after {step}"

        setattr(owner, name, marked)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="a Parquet file with id and text columns")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--duckdb-memory-mib",
        type=int,
        default=None,
        help="DuckDB's memory limit for the run (OutOfCoreSettings.memory_limit_mib; default 512)",
    )
    args = parser.parse_args()

    import curata.checks.duplicates as duplicates
    import curata.checks.groups as groups
    import curata.report.html as html
    from curata import outofcore
    from curata.cli import app
    from curata.outofcore import use_returning_memory_pool

    audit_module = sys.modules["curata.audit"]
    sampler = StepSampler()
    for owner, name, step in [
        (audit_module, "read_dataset", "reading"),
        (audit_module, "map_to_file", "mapping the data's columns"),
        (audit_module, "compute_signals", "signals"),
        (groups, "representative_rank", "rank"),
        (groups, "exact_groups", "exact groups"),
        (groups, "text_near_pairs", "LSH candidate pairs"),
        (groups, "verify_text_pairs", "verification"),
        (duplicates.ExactDuplicateCheck, "run", "exact-duplicate check"),
        (duplicates.NearDuplicateCheck, "run", "near-duplicate check"),
        (audit_module, "build_report", "report statistics"),
        (audit_module, "worst_examples", "report examples"),
        (html, "render_html", "HTML report"),
    ]:
        sampler.wrap(owner, name, step)
    pool = use_returning_memory_pool()
    work = Path(tempfile.mkdtemp(prefix="curata-memory-steps-"))
    started = time.perf_counter()
    sampler.start()
    limits = {} if args.duckdb_memory_mib is None else {"memory_limit_mib": args.duckdb_memory_mib}
    try:
        with outofcore.configured(**limits):
            app(
                [
                    "audit", str(args.data), "--out", str(work / "out"), "--workspace", str(work / "ws"),
                    "--id-column", "id", "--text-column", "text",
                    "--checks", "exact_duplicate,near_duplicate", "--workers", str(args.workers), "-q",
                ],
                standalone_mode=False,
            )  # fmt: skip
    finally:
        sampler.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.data.name}: {time.perf_counter() - started:.1f} s, Arrow pool {pool}")
    print(f"{'step':<34} {'anonymous MiB':>13} {'file-backed MiB':>15}")
    for step, (anon, file) in sampler.peaks.items():
        print(f"{step:<34} {anon / 1024:>13,.0f} {file / 1024:>15,.0f}")


if __name__ == "__main__":
    main()
