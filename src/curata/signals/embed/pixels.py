"""Image fallback encoder: the picture itself, small (no extras needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curata.errors import ConfigError
from curata.signals.embed.base import Encoder, decode_rgb, unit_rows


@dataclass
class PixelEncoder(Encoder):
    """Each image composited on white, resized to ``side`` x ``side`` RGB, centred and unit-scaled.

    A baseline that needs no model: it sees layout and colour, not meaning. Use it to compare
    learnt encoders against (the self-supervised encoder should beat it).
    """

    name = "pixels"
    modality = "image"
    side: int = 16

    def __post_init__(self) -> None:
        if not 2 <= self.side <= 128:
            raise ConfigError(f"pixels side must be in 2..128, got {self.side}")

    def fingerprint(self) -> str:
        """Version and size."""
        return f"pixels-v1-rgb{self.side}"

    def encode(self, batch: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Decode and shrink every image; undecodable ones get a zero row and ok=False."""
        from PIL import Image

        dim = 3 * self.side * self.side
        out = np.zeros((len(batch), dim), dtype=np.float32)
        ok = np.zeros(len(batch), dtype=bool)
        for i, data in enumerate(batch):
            img = decode_rgb(data)
            if img is None:
                continue
            small = img.resize((self.side, self.side), Image.Resampling.BOX)
            vec = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
            out[i] = vec - vec.mean()
            ok[i] = True
        return unit_rows(out), ok
