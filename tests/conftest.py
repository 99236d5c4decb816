"""Shared fixtures: small datasets made in code (seeded), never downloaded."""

from __future__ import annotations

import io
import random
from pathlib import Path

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
