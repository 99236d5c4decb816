"""The encoder contract: content in, one float32 vector per record out, with a cache fingerprint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

Modality = Literal["text", "image", "tabular"]


class Encoder(ABC):
    """Turns a batch of record contents into a float32 matrix (one unit-length row per record).

    ``encode`` receives texts (``str`` or None) or encoded image bytes (``bytes`` or None) and
    returns ``(vectors, ok)``: rows whose content is missing or unreadable are zero with
    ``ok`` False. ``fingerprint`` names the model, its version, its settings and, for encoders
    fitted to the data, the fit; embeddings are cached under it.

    Encoders are shipped to worker processes by pickling, so they must stay small: heavy state
    (model weights, fitted matrices) lives in a file and is loaded lazily, once per process, into
    attributes whose names start with ``_loaded`` (dropped when pickled).
    """

    name: ClassVar[str] = ""
    modality: ClassVar[Modality] = "text"

    def fit(self, sample: Sequence[Any], state_dir: Path) -> Encoder:
        """Return an encoder fitted on ``sample`` (state stored under ``state_dir``); default: self."""
        return self

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the vectors this encoder makes could change."""

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Return (float32 matrix of unit rows, bool mask of rows that could be encoded)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_loaded")}


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 length (zero rows stay zero), as float32."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out: np.ndarray = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
    return out
