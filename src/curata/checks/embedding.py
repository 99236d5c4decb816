"""Checks that need one vector per record: outliers, class imbalance, under-represented regions.

Embeddings come from ``curata.signals.embed`` (an encoder, tabular features, or the user's), and the
nearest-neighbour search from ``curata.knn``; both are computed once per run and shared.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, register
from curata.errors import ConfigError, InputError
from curata.knn import Neighbours, nearest_neighbours
from curata.signals.embed import Embeddings, EmbedSettings, compute_embeddings


@dataclass(frozen=True)
class ModelCheckSettings:
    """Settings of the embedding-based checks.

    ``outlier_k``: neighbours whose mean cosine distance is a record's outlier statistic;
    ``outlier_min_z``: robust z-score (median / MAD of that statistic) from which a record is an
    outlier, provided it is also at least ``outlier_min_ratio`` times farther from its neighbours
    than they are from theirs (so the tail of a dense, clean dataset is not flagged);
    ``rare_class_ratio``: a class smaller than this share of the largest class is rare;
    ``min_class_records``: classes below this size are rare whatever the ratio;
    ``cluster_min_share``: a k-means cluster holding less than this multiple of the mean cluster
    share is a coverage gap; ``seed`` makes k-means reproducible.
    """

    outlier_k: int = 10
    outlier_min_z: float = 4.0
    outlier_min_ratio: float = 2.5
    rare_class_ratio: float = 0.1
    min_class_records: int = 5
    cluster_min_share: float = 0.1
    max_examples: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.outlier_k < 1:
            raise ConfigError(f"outlier_k must be at least 1, got {self.outlier_k}")
        if self.outlier_min_z <= 0:
            raise ConfigError(f"outlier_min_z must be positive, got {self.outlier_min_z}")
        if self.outlier_min_ratio < 1:
            raise ConfigError(f"outlier_min_ratio must be at least 1, got {self.outlier_min_ratio}")
        if not 0 < self.rare_class_ratio < 1:
            raise ConfigError(f"rare_class_ratio must be in (0, 1), got {self.rare_class_ratio}")
        if not 0 < self.cluster_min_share < 1:
            raise ConfigError(f"cluster_min_share must be in (0, 1), got {self.cluster_min_share}")


def model_settings(context: Context) -> ModelCheckSettings:
    """The run's ModelCheckSettings (defaults when the caller gave none)."""
    settings = context.settings.get("model")
    return settings if isinstance(settings, ModelCheckSettings) else ModelCheckSettings()


def embeddings_unavailable(context: Context, min_records: int = 20) -> str | None:
    """Why no embeddings of at least ``min_records`` usable records can be made, or None."""
    if context.dataset.num_rows < min_records:
        return f"fewer than {min_records} records"
    embed: EmbedSettings = context.settings.get("embed") or EmbedSettings()
    if embed.embeddings_file or embed.embedding_column:
        return None
    if context.dataset.modality != "none":
        from curata.checks.groups import valid_content_mask

        usable = int(valid_content_mask(context.signals["data"]).sum())
        return None if usable >= min_records else f"fewer than {min_records} records with content"
    from curata.signals.embed.tabular import tabular_features

    try:
        tabular_features(context.dataset)
    except InputError as exc:
        return f"no content to embed ({exc})"
    return None


def shared_embeddings(context: Context) -> Embeddings:
    """The run's embeddings, computed (or loaded from the cache) once."""

    def compute() -> Embeddings:
        from curata.engine import get_engine

        embed: EmbedSettings = context.settings.get("embed") or EmbedSettings()
        engine = context.settings.get("engine") or get_engine("local", 1)
        workspace = Path(context.settings.get("workspace") or ".curata")
        signals = context.signals.get("data")
        return compute_embeddings(
            context.dataset,
            embed,
            engine,
            context.settings.get("cache"),
            workspace / "encoders",
            content_hashes=getattr(signals, "content_hashes", None),
        )

    emb: Embeddings = context.shared("embeddings", compute)
    return emb


def shared_neighbours(context: Context) -> Neighbours:
    """Nearest neighbours among the records with a usable embedding (row numbers of the dataset)."""

    def compute() -> Neighbours:
        emb = shared_embeddings(context)
        rows = np.flatnonzero(emb.ok)
        k = min(model_settings(context).outlier_k, max(1, len(rows) - 1))
        found = nearest_neighbours(emb.vectors[rows], k, emb.metric)
        index = np.where(found.index >= 0, rows[np.maximum(found.index, 0)], -1)
        full_idx = np.full((len(emb.ok), index.shape[1]), -1, dtype=np.int64)
        full_dist = np.zeros((len(emb.ok), index.shape[1]), dtype=np.float32)
        full_idx[rows] = index
        full_dist[rows] = found.distance
        return Neighbours(full_idx, full_dist, found.exact)

    neighbours: Neighbours = context.shared("neighbours", compute)
    return neighbours


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 * MAD); a zero MAD falls back to the mean absolute deviation."""
    med = float(np.median(values))
    dev = np.abs(values - med)
    scale = 1.4826 * float(np.median(dev)) or 1.2533 * float(dev.mean()) or 1.0
    out: np.ndarray = (values - med) / scale
    return out


def relative_isolation(distance: np.ndarray, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """How much farther a record is from its neighbours than they are from theirs (log ratio).

    ``distance[i]`` is the mean neighbour distance of ``rows[i]``. Comparing it with the median
    over its own neighbours (as the local outlier factor does) makes the measure local: the edge
    of a wide cluster is not an outlier, a record far from any cluster is.
    """
    floor = 1e-6 * max(float(np.median(distance)), 1e-12)  # exact duplicates sit at distance 0
    log_d = np.log(distance + floor)
    lookup = np.full(index.shape[0], np.nan)
    lookup[rows] = log_d
    neighbour_log = lookup[np.maximum(index[rows], 0)]
    neighbour_log[index[rows] < 0] = np.nan
    out: np.ndarray = np.nan_to_num(log_d - np.nanmedian(neighbour_log, axis=1), nan=0.0)
    return out


def z_score_to_unit(z: np.ndarray, min_z: float) -> np.ndarray:
    """Map a robust z-score to [0, 1): 0.5 at ``min_z``, 0.75 at twice it, rising towards 1."""
    out: np.ndarray = 1.0 - 0.5 ** (np.maximum(z, 0.0) / min_z)
    return out


@register
class OutlierCheck(Check):
    """Records far from every other record in embedding space.

    The statistic is the record's mean distance to its k nearest neighbours relative to theirs
    (log ratio, local like LOF), turned into a robust z-score over the dataset.
    """

    name = "outlier"
    description = "Records unlike the rest: mean distance to their nearest neighbours is extreme."

    def applies(self, context: Context) -> str | None:
        """Needs embeddings of at least 20 records."""
        return embeddings_unavailable(context, 20)

    def run(self, context: Context) -> pa.Table:
        """One finding per record whose neighbour distance has a robust z-score >= outlier_min_z."""
        settings = model_settings(context)
        emb = shared_embeddings(context)
        nb = shared_neighbours(context)
        rows = np.flatnonzero(emb.ok & (nb.index[:, 0] >= 0))
        out = FindingsBuilder(self.name)
        if len(rows) < 20:
            return out.table()
        distance = nb.distance[rows].mean(axis=1)
        isolation = relative_isolation(distance, rows, nb.index)
        z = robust_z(isolation)
        flagged = (z >= settings.outlier_min_z) & (isolation >= np.log(settings.outlier_min_ratio))
        scores = z_score_to_unit(z, settings.outlier_min_z)
        ids = context.record_ids
        median = float(np.median(distance))
        for pos in np.flatnonzero(flagged):
            row = int(rows[pos])
            nearest = int(nb.index[row, 0])
            out.add(
                ids[row],
                related_id=ids[nearest],
                score=float(scores[pos]),
                severity="warning" if z[pos] >= 2 * settings.outlier_min_z else "info",
                message=(
                    f"unlike the rest of the data: mean distance to its {nb.index.shape[1]} nearest records "
                    f"is {distance[pos]:.3f} (typical {median:.3f}); nearest is {ids[nearest]}"
                ),
                evidence={
                    "mean_neighbour_distance": round(float(distance[pos]), 4),
                    "median_distance": round(median, 4),
                    "robust_z": round(float(z[pos]), 2),
                    "isolation_ratio": round(float(np.exp(isolation[pos])), 2),
                    "embeddings": emb.source,
                    "exact_search": nb.exact,
                },
            )
        return out.table()


@register
class ClassImbalanceCheck(Check):
    """Classes much smaller than the largest one."""

    name = "class_imbalance"
    description = "Rare classes: far fewer records than the largest class."

    def applies(self, context: Context) -> str | None:
        """Needs a label role with at least two classes."""
        labels = [v for v in context.dataset.labels() if v is not None]
        if len(set(labels)) < 2:
            return "no label column with two or more classes"
        return None

    def run(self, context: Context) -> pa.Table:
        """Every record of a rare class gets an info finding naming the class sizes."""
        settings = model_settings(context)
        labels = context.dataset.labels()
        counts = Counter(v for v in labels if v is not None)
        largest_label, largest = counts.most_common(1)[0]
        rare = {
            c: n
            for c, n in counts.items()
            if n < settings.rare_class_ratio * largest or n < settings.min_class_records
        }
        out = FindingsBuilder(self.name)
        ids = context.record_ids
        for row, label in enumerate(labels):
            if label not in rare:
                continue
            n = rare[label]
            out.add(
                ids[row],
                group_id=f"class-{label}",
                score=float(1.0 - n / largest),
                severity="info",
                message=(
                    f"class '{label}' has {n} records, {n / largest:.1%} of the largest class "
                    f"'{largest_label}' ({largest})"
                ),
                evidence={
                    "class": label,
                    "class_size": n,
                    "largest_class": largest_label,
                    "largest": largest,
                },
            )
        return out.table()


def kmeans_labels(vectors: np.ndarray, k: int, seed: int, spherical: bool = True) -> np.ndarray:
    """Cluster vectors with k-means (faiss; spherical for unit vectors), returning a cluster per row."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    km = faiss.Kmeans(
        x.shape[1], k, niter=20, seed=seed, spherical=spherical, verbose=False, min_points_per_centroid=1
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return np.asarray(assign[:, 0], dtype=np.int64)


@register
class UnderrepresentedCheck(Check):
    """Regions of embedding space (k-means clusters) holding a tiny share of the data or of a class."""

    name = "underrepresented"
    description = "Coverage gaps: embedding clusters with a tiny share of the data, or of one class."

    def applies(self, context: Context) -> str | None:
        """Needs embeddings of at least 100 records."""
        return embeddings_unavailable(context, 100)

    def run(self, context: Context) -> pa.Table:
        """Members of tiny clusters, overall and within each class large enough to cluster."""
        settings = model_settings(context)
        emb = shared_embeddings(context)
        out = FindingsBuilder(self.name)
        ids = context.record_ids
        labels = context.dataset.labels()
        groups: list[tuple[str | None, np.ndarray]] = [(None, np.flatnonzero(emb.ok))]
        if labels:
            classes = sorted({v for v in labels if v is not None})
            code = {c: i for i, c in enumerate(classes)}
            label_codes = np.array([-1 if v is None else code[v] for v in labels], dtype=np.int64)
            for name in classes:
                members = np.flatnonzero(emb.ok & (label_codes == code[name]))
                if len(members) >= 100:
                    groups.append((name, members))
        reported: set[int] = set()
        for cls, rows in groups:
            if len(rows) < 100:
                continue
            k = int(min(64, max(4, round(np.sqrt(len(rows) / 4)))))
            assign = kmeans_labels(emb.vectors[rows], k, settings.seed, emb.metric == "cosine")
            sizes = np.bincount(assign, minlength=k)
            threshold = settings.cluster_min_share * len(rows) / k
            for c in np.flatnonzero((sizes > 0) & (sizes < threshold)):
                members = rows[assign == c]
                share = len(members) / len(rows)
                scope = "the data" if cls is None else f"class '{cls}'"
                for row in members.tolist():
                    if row in reported:
                        continue
                    reported.add(row)
                    out.add(
                        ids[row],
                        group_id=f"cluster-{'all' if cls is None else cls}-{int(c)}",
                        score=float(1.0 - sizes[c] / threshold),
                        severity="info",
                        message=(
                            f"in a sparse region of {scope}: its cluster holds {len(members)} records "
                            f"({share:.2%}; an even split would be {1 / k:.1%})"
                        ),
                        evidence={"cluster_size": len(members), "clusters": k, "scope": cls or "all"},
                    )
        return out.table()
