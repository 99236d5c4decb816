"""Run a command and measure its wall time and the peak memory of its whole process tree.

Two memory figures are sampled: the sum of RSS over the tree, and the sum of PSS (proportional set
size, from /proc/PID/smaps_rollup). Forked workers share their parent's pages copy-on-write, and RSS
counts every shared page once per process that maps it; PSS splits each shared page between the
processes sharing it, so the PSS sum is the memory the tree really holds. Both are reported.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def _tree_memory_bytes(pid: int) -> tuple[int, int, int]:
    """Return (sum of RSS, sum of PSS, largest single RSS) over ``pid`` and its descendants."""
    tree = _children()
    rss = pss = largest = 0
    stack = [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            one = int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
            rss += one
            largest = max(largest, one)
            pss += _pss_bytes(p)
        stack.extend(tree.get(p, []))
    return rss, pss, largest


@dataclass(frozen=True)
class Measure:
    """One measured run: wall seconds and the tree's peak memory in MiB (PSS sum, RSS sum, and the
    largest RSS of one process: the main process's own, free of the pages forked workers share)."""

    wall_s: float
    peak_pss_mib: float
    peak_rss_mib: float
    returncode: int
    peak_max_rss_mib: float = 0.0
    #: RSS of the command's own process (the driver, under Ray: workers are other processes).
    peak_main_rss_mib: float = 0.0


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None, poll_s: float = 0.05) -> Measure:
    """Run ``cmd`` and return its wall time and the peak memory of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_rss = peak_pss = peak_one = peak_main = 0
    page = os.sysconf("SC_PAGE_SIZE")
    while proc.poll() is None:
        rss, pss, one = _tree_memory_bytes(proc.pid)
        peak_rss, peak_pss, peak_one = max(peak_rss, rss), max(peak_pss, pss), max(peak_one, one)
        with contextlib.suppress(OSError, IndexError, ValueError):
            peak_main = max(peak_main, int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * page)
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return Measure(
        wall, peak_pss / 2**20, peak_rss / 2**20, proc.returncode, peak_one / 2**20, peak_main / 2**20
    )


def median_runs(cmd: Sequence[str], runs: int, env: dict[str, str] | None = None) -> Measure:
    """Median wall time and maximum peak memory (PSS and RSS sums) over ``runs`` runs."""
    done = [run_measured(cmd, env) for _ in range(runs)]
    return Measure(
        statistics.median(m.wall_s for m in done),
        max(m.peak_pss_mib for m in done),
        max(m.peak_rss_mib for m in done),
        0,
    )
