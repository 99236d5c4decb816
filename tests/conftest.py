"""Shared fixtures: small datasets made in code (seeded), never downloaded."""

from __future__ import annotations

import importlib.util
import io
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

WORDS = [
    "data",
    "model",
    "train",
    "label",
    "image",
    "text",
    "audit",
    "record",
    "cluster",
    "split",
    "leak",
    "noise",
    "clean",
    "sample",
    "batch",
    "vector",
    "signal",
    "hash",
    "shingle",
    "window",
    "river",
    "mountain",
    "forest",
    "ocean",
    "desert",
    "city",
    "garden",
    "market",
    "engine",
    "wheel",
    "bridge",
    "tower",
    "castle",
    "harbor",
    "island",
    "valley",
    "meadow",
    "canyon",
    "glacier",
    "volcano",
    "prairie",
    "apple",
    "banana",
    "cherry",
    "grape",
    "lemon",
    "mango",
    "olive",
    "peach",
    "pear",
    "plum",
    "berry",
    "melon",
    "orange",
    "kiwi",
    "lime",
]


def random_text(rng: random.Random, n_words: int = 30) -> str:
    """A sentence of random words (distinct texts share few 5-character shingles)."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def edit_words(text: str, rng: random.Random, n_edits: int) -> str:
    """Replace ``n_edits`` words at random positions."""
    words = text.split()
    for _ in range(n_edits):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def pattern_image(seed: int, size: int = 64) -> Image.Image:
    """A random blocky RGB picture: distinct seeds give perceptually distinct images."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BILINEAR)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    """Encode a PIL image to bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def clean_texts() -> list[str]:
    """Forty distinct random texts."""
    rng = random.Random(1)
    return [random_text(rng) for _ in range(40)]


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows as a Parquet file and return its path."""
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_image_folder(root: Path, layout: dict[str, bytes]) -> Path:
    """Write ``relative path -> bytes`` files under ``root``."""
    for rel, data in layout.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# -- a real Ray cluster for the engine tests ---------------------------------------------------------

#: Token authentication with a token of this session's own (whatever ~/.ray holds), set before Ray
#: is first imported: Ray reads the mode once.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
if importlib.util.find_spec("ray") is not None:
    os.environ.update(RAY_AUTH)
    # Tests are offline: no usage-statistics report (whose failing thread prints at exit).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, Any]]:
    """A 2-CPU Ray head started with ``ray start --head --block`` (one for the whole session, shared
    by every Ray test module), this process connected to it; stopped (only it) at the end.

    Yields ``address`` (HOST:PORT), ``client`` (the ray:// address of its client server) and
    ``engine`` (a RayEngine connected to it).
    """
    ray = pytest.importorskip("ray", reason="needs curata[ray]")
    from curata.engine import get_engine

    tmp = tempfile.mkdtemp(prefix="cr", dir="/tmp")  # short: Ray's unix sockets live under it
    port = free_port()
    client_port = free_port()
    env = {**os.environ, **RAY_AUTH, "RAY_TMPDIR": tmp, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={client_port}",
        "--disable-usage-stats",
        f"--temp-dir={tmp}",
        "--block",
    ]
    log = Path(tmp) / "start.log"
    with log.open("wb") as sink:
        head = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    try:
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in log.read_bytes():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        address = f"127.0.0.1:{port}"
        engine = get_engine("ray", address=address)
        node_ip = ray.nodes()[0]["NodeManagerAddress"]
        yield {"address": address, "client": f"ray://{node_ip}:{client_port}", "engine": engine}
    finally:
        ray.shutdown()
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)
