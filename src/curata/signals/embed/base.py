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
    #: Whether the encoder must be fitted to (a sample of) the data before it can encode.
    needs_fit: ClassVar[bool] = False

    def is_fitted(self) -> bool:
        """Whether ``encode`` can run now (encoders that need no fit always can)."""
        return True

    def fit_sample_size(self, requested: int) -> int:
        """How many records ``fit`` should get when the settings ask for ``requested``."""
        return requested

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


def decode_rgb(data: Any) -> Any:
    """Decode image bytes to an RGB PIL image, transparency composited on white; None if unreadable."""
    from curata.signals.image import ImageDecodeError, decode_image, on_white

    if not data:
        return None
    try:
        img = decode_image(bytes(data))
    except ImageDecodeError:
        return None
    return on_white(img).convert("RGB")


def import_torch(package: str, extra: str) -> Any:
    """Import torch for an encoder, raising MissingDependencyError naming ``package`` and ``extra``.

    In a worker process torch gets one intra-op thread: the engine already runs one process per
    core, and more threads each would only contend.
    """
    import multiprocessing

    try:
        import torch
    except ImportError:
        from curata.errors import MissingDependencyError

        raise MissingDependencyError(package, extra) from None
    if multiprocessing.parent_process() is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return torch


def torch_device(torch: Any) -> str:
    """``cuda`` in the main process when a GPU is there, else ``cpu`` (workers are forked: no CUDA)."""
    import multiprocessing

    if multiprocessing.parent_process() is None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 length (zero rows stay zero), as float32."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out: np.ndarray = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
    return out
