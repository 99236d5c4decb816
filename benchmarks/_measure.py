"""Run a command and measure its wall time and the peak RSS of its whole process tree."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
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


def _tree_rss_bytes(pid: int) -> int:
    tree = _children()
    total, stack = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
        stack.extend(tree.get(p, []))
    return total


def run_measured(
    cmd: Sequence[str], env: dict[str, str] | None = None, poll_s: float = 0.05
) -> tuple[float, float, int]:
    """Return (wall seconds, peak RSS of the process tree in MiB, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_bytes(proc.pid))
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return wall, peak / 2**20, proc.returncode


def median_runs(cmd: Sequence[str], runs: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median wall time and maximum peak RSS over ``runs`` runs."""
    walls, peaks = [], []
    for _ in range(runs):
        wall, peak, _ = run_measured(cmd, env)
        walls.append(wall)
        peaks.append(peak)
    return statistics.median(walls), max(peaks)
