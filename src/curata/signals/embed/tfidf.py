"""Text fallback encoder: hashed character n-gram TF-IDF reduced by truncated SVD (no extras needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curata.errors import ConfigError
from curata.signals.embed.base import Encoder, unit_rows


@dataclass
class HashedTfidfSvd(Encoder):
    """Character 3-5-gram counts hashed into ``n_features`` buckets, TF-IDF weighted, then projected
    onto the top ``dim`` singular vectors of a seeded sample of the data (LSA), over the buckets
    that two or more sample texts share.

    Fitting needs no labels; the sample is chosen by content hash (the records with the smallest
    hashes), so it is stable when a few records change and the cached vectors stay valid.
    """

    name = "tfidf-svd"
    modality = "text"
    needs_fit = True
    dim: int = 128
    n_features: int = 1 << 18
    seed: int = 0
    state_path: str | None = None
    state_digest: str = "unfitted"

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ConfigError(f"tfidf-svd dim must be at least 2, got {self.dim}")

    def is_fitted(self) -> bool:
        """Whether the IDF weights and projection have been fitted and stored."""
        return self.state_path is not None

    def _vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(3, 5),
            n_features=self.n_features,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )

    def fit(self, sample: Sequence[Any], state_dir: Path) -> HashedTfidfSvd:
        """Fit IDF weights and the SVD projection on ``sample`` (texts) and store them."""
        from sklearn.decomposition import TruncatedSVD

        texts = [t for t in sample if isinstance(t, str) and t.strip()]
        if len(texts) < 3:
            raise ConfigError("tfidf-svd needs at least 3 non-empty texts to fit")
        counts = self._vectorizer().transform(texts).tocsr()
        df = np.bincount(counts.indices, minlength=self.n_features)
        idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
        weighted = _normalise_sparse(_log_tf(counts).multiply(idf).tocsr())
        # Only n-grams shared by two or more sample texts can relate texts to each other; the rest
        # (most of the hashed space) would make the randomized SVD work on a 2^18-row dense basis.
        shared = np.flatnonzero(df >= 2).astype(np.int32)
        if shared.size < 2:
            raise ConfigError("tfidf-svd needs texts that share some character n-grams to fit")
        weighted = weighted[:, shared]
        k = min(self.dim, max(1, min(weighted.shape) - 1))
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=5, random_state=self.seed)
        svd.fit(weighted)
        components = svd.components_.astype(np.float32)
        digest = hashlib.sha256(idf.tobytes() + shared.tobytes() + components.tobytes()).hexdigest()[:16]
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / f"tfidf-svd-{digest}.npz"
        if not path.exists():
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, idf=idf, shared=shared, components=components)
            tmp.replace(path)
        return HashedTfidfSvd(self.dim, self.n_features, self.seed, str(path), digest)

    def fingerprint(self) -> str:
        """Settings plus the digest of the fitted weights."""
        return f"tfidf-svd-v2-char_wb3-5-h{self.n_features}-d{self.dim}-s{self.seed}-{self.state_digest}"

    def encode(self, batch: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Project each text; missing or blank texts get a zero row and ok=False."""
        if self.state_path is None:
            raise ConfigError("tfidf-svd must be fitted before encoding")
        state = getattr(self, "_loaded_state", None)
        if state is None:
            with np.load(self.state_path) as npz:
                state = (npz["idf"], npz["shared"], npz["components"])
            self._loaded_state = state
        idf, shared, components = state
        ok = np.array([isinstance(t, str) and bool(t.strip()) for t in batch], dtype=bool)
        out = np.zeros((len(batch), components.shape[0]), dtype=np.float32)
        if ok.any():
            texts = [str(t) for t, good in zip(batch, ok, strict=True) if good]
            weighted = _normalise_sparse(_log_tf(self._vectorizer().transform(texts)).multiply(idf).tocsr())
            out[ok] = unit_rows(weighted[:, shared] @ components.T)
        return out, ok


def _log_tf(counts: Any) -> Any:
    """Sublinear term frequency, 1 + log(count), on a sparse matrix."""
    out = counts.astype(np.float32).tocsr(copy=True)
    out.data = 1.0 + np.log(out.data)
    return out


def _normalise_sparse(matrix: Any) -> Any:
    from sklearn.preprocessing import normalize

    return normalize(matrix, norm="l2", copy=False)
