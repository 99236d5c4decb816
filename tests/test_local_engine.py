"""The local engine's process pool: workers end with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import suppress
from pathlib import Path

import pytest

from curata.engine import LocalEngine

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from curata.engine import LocalEngine

    def work(x):
        if x >= 2:
            time.sleep(120)
        return x

    for value in LocalEngine(workers=2).map_batches(work, range(6)):
        print(value, flush=True)
    """
)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be read


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_pool_workers_end_when_the_audit_process_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "0"  # the pool runs; later batches now sleep
        workers = _children(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)  # as the kernel's out-of-memory killer would
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "pool workers outlived the killed process"
    finally:
        proc.kill()
        for w in workers:
            with suppress(OSError):
                os.kill(w, signal.SIGKILL)


def _pid(_: int) -> int:
    return os.getpid()


def test_pool_workers_keep_running_while_their_parent_lives() -> None:
    pids = list(LocalEngine(workers=2).map_batches(_pid, range(8)))
    assert len(pids) == 8
    assert os.getpid() not in pids  # the batches ran in the pool, which the set-up did not end
