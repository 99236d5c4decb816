"""Embeddings: one vector per record from an encoder (cached) or from the user, shared by checks.

``--encoder NAME`` picks the encoder; ``auto`` chooses by modality and what is installed. Vectors
are unit length; rows whose content is missing or unreadable are zero with ``ok`` False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curata.dataset import Dataset
from curata.engine.base import Engine
from curata.errors import ConfigError, InputError
from curata.signals.cache import SignalCache
from curata.signals.embed.base import Encoder, unit_rows
from curata.signals.embed.pixels import PixelEncoder
from curata.signals.embed.tabular import tabular_features
from curata.signals.embed.tfidf import HashedTfidfSvd

__all__ = [
    "ENCODERS",
    "EmbedSettings",
    "Embeddings",
    "Encoder",
    "compute_embeddings",
    "make_encoder",
]

#: Encoders by name, with the modality each reads.
ENCODERS: dict[str, type[Encoder]] = {
    HashedTfidfSvd.name: HashedTfidfSvd,
    PixelEncoder.name: PixelEncoder,
}


@dataclass(frozen=True)
class EmbedSettings:
    """How embeddings are made: the encoder, or a user-supplied ``.npy`` file / embedding column."""

    encoder: str = "auto"
    embeddings_file: str | None = None
    embedding_column: str | None = None
    text_batch_size: int = 4096
    image_batch_size: int = 256
    fit_sample: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder not in ("auto", "tabular", *ENCODERS):
            raise ConfigError(
                f"unknown encoder '{self.encoder}': choose from auto, tabular, {', '.join(ENCODERS)}"
            )
        if self.embeddings_file is not None and self.embedding_column is not None:
            raise ConfigError("give either an embeddings file or an embedding column, not both")
        if self.fit_sample < 3:
            raise ConfigError(f"fit_sample must be at least 3, got {self.fit_sample}")


@dataclass(frozen=True)
class Embeddings:
    """float32 vectors aligned with the dataset rows, and where they came from.

    ``metric`` is ``cosine`` for unit-length vectors (encoders, user embeddings) and
    ``euclidean`` for standardised tabular features, whose lengths carry meaning.
    """

    vectors: np.ndarray
    ok: np.ndarray
    source: str
    computed: int = 0
    cached: int = 0
    metric: Literal["cosine", "euclidean"] = "cosine"


def make_encoder(name: str, dataset: Dataset, seed: int = 0) -> Encoder | None:
    """The encoder ``name`` (``auto``: chosen by the data's modality); None means tabular features."""
    modality = dataset.modality
    if name == "tabular" or (name == "auto" and modality == "none"):
        return None
    if name == "auto":
        name = HashedTfidfSvd.name if modality == "text" else PixelEncoder.name
    cls = ENCODERS[name]
    if cls.modality != modality:
        raise ConfigError(f"encoder '{name}' reads {cls.modality} but {dataset.source} holds {modality}")
    if cls is HashedTfidfSvd:
        return HashedTfidfSvd(seed=seed)
    return cls()


def encode_batch(batch: Sequence[Any], encoder: Encoder) -> pa.RecordBatch:
    """Engine task: encode one batch into an ``embedding`` list column and an ``ok`` mask."""
    vectors, ok = encoder.encode(batch)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    return pa.RecordBatch.from_arrays(
        [pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]), pa.array(ok, pa.bool_())],
        names=["embedding", "ok"],
    )


def compute_embeddings(
    dataset: Dataset,
    settings: EmbedSettings,
    engine: Engine,
    cache: SignalCache | None,
    state_dir: Path,
) -> Embeddings:
    """Embeddings of every record: user-supplied, tabular features, or an encoder's (cached)."""
    if settings.embeddings_file is not None:
        return _from_file(dataset, Path(settings.embeddings_file))
    if settings.embedding_column is not None:
        return _from_column(dataset, settings.embedding_column)
    encoder = make_encoder(settings.encoder, dataset, settings.seed)
    if encoder is None:
        features = tabular_features(dataset)
        return Embeddings(features.matrix, np.ones(dataset.num_rows, bool), "tabular", metric="euclidean")
    from curata.signals.pipeline import map_records

    if isinstance(encoder, HashedTfidfSvd):
        encoder = encoder.fit(_fit_sample(dataset, settings.fit_sample), state_dir)
    batch_size = settings.text_batch_size if dataset.modality == "text" else settings.image_batch_size
    signals = map_records(
        dataset,
        engine,
        encode_batch,
        (encoder,),
        fingerprint=f"embed-v1|{encoder.fingerprint()}",
        cache=cache,
        batch_size=batch_size,
        description=f"embeddings ({encoder.name})",
    )
    col = signals.column("embedding").combine_chunks()
    dim = col.type.list_size
    vectors = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    ok = np.asarray(signals.column("ok").to_numpy(zero_copy_only=False), dtype=bool)
    return Embeddings(vectors, ok, encoder.fingerprint(), signals.computed, signals.cached)


def _fit_sample(dataset: Dataset, size: int) -> list[Any]:
    """Up to ``size`` texts: those with the smallest content hashes (stable as the data changes)."""
    from curata.signals.pipeline import content_hash, hash_array

    hashes = [
        hash_array([content_hash(None if v is None else str(v).encode("utf-8", "surrogatepass")) for v in b])
        for b in (batch.to_pylist() for batch in dataset.content_batches("text", 65_536))
    ]
    all_hashes = np.concatenate(hashes) if hashes else np.empty(0, "S16")
    if len(all_hashes) <= size:
        rows = np.arange(len(all_hashes))
    else:
        rows = np.sort(np.argsort(all_hashes, kind="stable")[:size])
    values: list[Any] = dataset.take("text", rows).to_pylist()
    return values


def _from_file(dataset: Dataset, path: Path) -> Embeddings:
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot read embeddings ({exc}); give a .npy file of shape (rows, dim)"
        ) from None
    if matrix.ndim != 2 or matrix.shape[0] != dataset.num_rows:
        raise InputError(
            f"{path}: embeddings have shape {matrix.shape}; expected ({dataset.num_rows}, dim), "
            "one row per record in the data's order"
        )
    if not np.issubdtype(matrix.dtype, np.number) or not np.isfinite(matrix).all():
        raise InputError(f"{path}: embeddings must be finite numbers")
    vectors = unit_rows(matrix)
    return Embeddings(vectors, np.linalg.norm(vectors, axis=1) > 0, f"file:{path.name}")


def _from_column(dataset: Dataset, name: str) -> Embeddings:
    if name not in dataset.table.column_names:
        raise InputError(f"{dataset.source}: no column named '{name}' for embeddings")
    col = dataset.table.column(name).combine_chunks()
    if not (
        pa.types.is_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
        or pa.types.is_large_list(col.type)
    ):
        raise InputError(
            f"{dataset.source}: embedding column '{name}' holds {col.type}, not lists of numbers"
        )
    rows = col.to_pylist()
    lengths = {len(r) for r in rows if r is not None}
    if len(lengths) != 1:
        raise InputError(
            f"{dataset.source}: embedding column '{name}' has vectors of different lengths "
            f"{sorted(lengths)[:5]}"
        )
    dim = lengths.pop()
    matrix = np.zeros((len(rows), dim), dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        if r is not None and all(v is not None for v in r):
            matrix[i] = r
            ok[i] = True
    if not np.isfinite(matrix).all():
        raise InputError(f"{dataset.source}: embedding column '{name}' holds NaN or infinite values")
    return Embeddings(unit_rows(matrix), ok & (np.linalg.norm(matrix, axis=1) > 0), f"column:{name}")
