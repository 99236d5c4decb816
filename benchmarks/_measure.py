"""Run a command and measure its wall time and the peak memory of its whole process tree.

Two memory figures are sampled: the sum of RSS over the tree, and the sum of PSS (proportional set
size, from /proc/PID/smaps_rollup). Forked workers share their parent's pages copy-on-write, and RSS
counts every shared page once per process that maps it; PSS splits each shared page between the
processes sharing it, so the PSS sum is the memory the tree really holds. Both are reported, with
the sum of anonymous RSS (``RssAnon``: heap and private memory, which the kernel cannot drop without
swap; file-backed pages such as memory-mapped spill files are left out, as the kernel reclaims them
under pressure).

``memory_cap`` runs the command in a memory cgroup (v1 or v2; needs root): the kernel then keeps
the tree's memory, page cache included, under the cap, reclaiming file pages as needed, and kills
the tree when its anonymous memory alone does not fit. A run that completes under a cap shows the
memory it needs, whatever the pages it happened to keep resident while memory was free.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
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


def _anon_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def _tree_memory_bytes(pid: int) -> tuple[int, int, int, int]:
    """Return (sum of RSS, sum of PSS, largest single RSS, sum of anonymous RSS) over ``pid`` and
    its descendants."""
    tree = _children()
    rss = pss = largest = anon = 0
    stack = [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            one = int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
            rss += one
            largest = max(largest, one)
            pss += _pss_bytes(p)
            anon += _anon_bytes(p)
        stack.extend(tree.get(p, []))
    return rss, pss, largest, anon


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
    #: Sum of anonymous RSS over the tree (memory-mapped files left out).
    peak_anon_mib: float = 0.0
    #: Anonymous RSS of the command's own process (the driver's private memory under Ray).
    peak_main_anon_mib: float = 0.0


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    poll_s: float = 0.05,
    *,
    preexec_fn: Callable[[], None] | None = None,
    allow_failure: bool = False,
) -> Measure:
    """Run ``cmd`` and return its wall time and the peak memory of its process tree.

    ``preexec_fn`` runs in the child before the command (e.g. ``MemoryCap.join``); with
    ``allow_failure`` a failed command is returned (its ``returncode``) instead of raising.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec_fn
    )
    peak_rss = peak_pss = peak_one = peak_main = peak_anon = peak_main_anon = 0
    page = os.sysconf("SC_PAGE_SIZE")
    while proc.poll() is None:
        rss, pss, one, anon = _tree_memory_bytes(proc.pid)
        peak_rss, peak_pss, peak_one = max(peak_rss, rss), max(peak_pss, pss), max(peak_one, one)
        peak_anon = max(peak_anon, anon)
        with contextlib.suppress(OSError, IndexError, ValueError):
            peak_main = max(peak_main, int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * page)
            peak_main_anon = max(peak_main_anon, _anon_bytes(proc.pid))
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1) and not allow_failure:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return Measure(
        wall,
        peak_pss / 2**20,
        peak_rss / 2**20,
        proc.returncode,
        peak_one / 2**20,
        peak_main / 2**20,
        peak_anon / 2**20,
        peak_main_anon / 2**20,
    )


class MemoryCap:
    """A fresh memory cgroup limited to ``limit_mib`` (cgroup v2, else v1's memory controller).

    ``join`` (a ``preexec_fn``) moves the child into it; ``peak_mib`` is the most the cgroup held,
    page cache included; ``oom_kills`` how many times the kernel killed in it. Raises OSError
    where no writable memory cgroup exists (not root, or no controller).
    """

    def __init__(self, limit_mib: int) -> None:
        name = f"curata-bench-{os.getpid()}-{time.monotonic_ns()}"
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.is_file() and "memory" in v2.read_text().split():
            self.v2 = True
            self.path = Path("/sys/fs/cgroup") / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(limit_mib * 2**20))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        else:
            self.v2 = False
            self.path = Path("/sys/fs/cgroup/memory") / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(limit_mib * 2**20))
        self.limit_mib = limit_mib

    def join(self) -> None:
        """Move the calling process into the cgroup (children follow)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mib(self) -> float:
        """The cgroup's peak memory use, page cache included."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text().split()[0]) / 2**20

    def oom_kills(self) -> int:
        """Processes the kernel killed for lack of memory in the cgroup."""
        events = self.path / ("memory.events" if self.v2 else "memory.oom_control")
        for line in events.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Delete the cgroup, first killing what is left in it (e.g. workers of a killed run)."""
        for _ in range(50):
            with contextlib.suppress(OSError):
                left = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
                for pid in left:
                    with contextlib.suppress(OSError):
                        os.kill(pid, 9)
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def memory_cap(limit_mib: int | None) -> Iterator[MemoryCap | None]:
    """A ``MemoryCap`` for the block, removed afterwards; None when ``limit_mib`` is None."""
    if limit_mib is None:
        yield None
        return
    cap = MemoryCap(limit_mib)
    try:
        yield cap
    finally:
        cap.remove()


def median_runs(cmd: Sequence[str], runs: int, env: dict[str, str] | None = None) -> Measure:
    """Median wall time and maximum peak memory (PSS and RSS sums) over ``runs`` runs."""
    done = [run_measured(cmd, env) for _ in range(runs)]
    return Measure(
        statistics.median(m.wall_s for m in done),
        max(m.peak_pss_mib for m in done),
        max(m.peak_rss_mib for m in done),
        0,
    )
