"""Checks that need one vector per record: outliers, class imbalance, under-represented regions.

Embeddings come from ``curata.signals.embed`` (an encoder, tabular features, or the user's), and the
nearest-neighbour search from ``curata.knn``; both are computed once per run and shared. With an
in-distribution reference (``--ood-reference``) the outlier check also compares every record with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, register
from curata.checks.groups import context_engine
from curata.dataset import Dataset
from curata.engine.base import ColumnRows
from curata.errors import ConfigError, InputError
from curata.knn import Metric, Neighbours, cross_neighbours, nearest_neighbours
from curata.signals.embed import Embeddings, EmbedSettings, compute_embeddings, embed_like

#: Fewest usable reference records an out-of-distribution comparison accepts: conformal p-values
#: cannot go below 1 / (n + 1), so a smaller reference could hardly flag anything.
MIN_OOD_REFERENCE = 20


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
    share is a coverage gap; ``seed`` makes k-means reproducible;
    ``ood_fdr``: the false discovery rate (Benjamini-Hochberg over conformal p-values) at which
    records are called out of distribution against an ``--ood-reference``.
    """

    outlier_k: int = 10
    outlier_min_z: float = 4.0
    outlier_min_ratio: float = 2.5
    rare_class_ratio: float = 0.1
    min_class_records: int = 5
    cluster_min_share: float = 0.1
    max_examples: int = 20
    seed: int = 0
    ood_fdr: float = 0.05

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
        if not 0 < self.ood_fdr < 1:
            raise ConfigError(f"ood_fdr must be in (0, 1), got {self.ood_fdr}")


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
        vectors = ColumnRows(emb.vectors, rows, "embedding", emb.files)
        found = context_engine(context).nearest_neighbours(vectors, k, emb.metric)
        index = np.where(found.index >= 0, rows[np.maximum(found.index, 0)], -1)
        full_idx = np.full((len(emb.ok), index.shape[1]), -1, dtype=np.int64)
        full_dist = np.zeros((len(emb.ok), index.shape[1]), dtype=np.float32)
        full_idx[rows] = index
        full_dist[rows] = found.distance
        return Neighbours(full_idx, full_dist, found.exact)

    neighbours: Neighbours = context.shared("neighbours", compute)
    return neighbours


def ood_reference(context: Context) -> Dataset | None:
    """The in-distribution reference of the run (``--ood-reference``), if one was given."""
    ref = context.settings.get("ood_reference")
    return ref if isinstance(ref, Dataset) else None


def shared_reference_embeddings(context: Context) -> Embeddings:
    """The ``--ood-reference``'s embeddings, made like the data's (same fitted encoder), once."""

    def compute() -> Embeddings:
        from curata.engine import get_engine

        ref = ood_reference(context)
        if ref is None:
            raise ConfigError("no --ood-reference to embed")
        embed: EmbedSettings = context.settings.get("embed") or EmbedSettings()
        engine = context.settings.get("engine") or get_engine("local", 1)
        workspace = Path(context.settings.get("workspace") or ".curata")
        return embed_like(
            ref,
            context.dataset,
            shared_embeddings(context),
            embed,
            engine,
            context.settings.get("cache"),
            workspace / "encoders",
        )

    emb: Embeddings = context.shared("ood_reference_embeddings", compute)
    return emb


@dataclass(frozen=True)
class OutOfDistribution:
    """How far each query lies from a reference, calibrated by the reference's own spread.

    ``distance``: mean distance of a query to its ``k`` nearest reference records; ``nearest``: the
    nearest reference row; ``reference_distance``: the same statistic of every reference record
    against the others (leave-one-out), sorted; ``p_value``: conformal p-value, (1 + number of
    reference records at least as far from the rest) / (n + 1), extrapolated along the reference's
    upper tail for queries beyond its largest distance (``extrapolated``); ``flagged``: rejected by
    Benjamini-Hochberg at the requested false discovery rate.
    """

    distance: np.ndarray
    nearest: np.ndarray
    reference_distance: np.ndarray
    p_value: np.ndarray
    extrapolated: np.ndarray
    flagged: np.ndarray
    k: int
    exact: bool

    @property
    def reference_quantile(self) -> np.ndarray:
        """Share of reference records strictly nearer to the rest than each query is to them."""
        below = np.searchsorted(self.reference_distance, self.distance, side="left")
        out: np.ndarray = below / len(self.reference_distance)
        return out


def _mean_distance(nb: Neighbours) -> np.ndarray:
    """Mean over each row's found neighbours (an approximate search may find fewer than k)."""
    dist = np.where(nb.index >= 0, nb.distance.astype(np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.nanmean(dist, axis=1)
    return out


def benjamini_hochberg(p_values: np.ndarray, fdr: float) -> np.ndarray:
    """Which p-values the Benjamini-Hochberg step-up procedure rejects at false discovery rate ``fdr``."""
    m = len(p_values)
    if m == 0:
        return np.zeros(0, dtype=bool)
    ranked = np.sort(p_values)
    passing = np.flatnonzero(ranked <= fdr * np.arange(1, m + 1) / m)
    if len(passing) == 0:
        return np.zeros(m, dtype=bool)
    out: np.ndarray = p_values <= ranked[passing[-1]]
    return out


#: Confidence of the upper bound on the reference's tail index used to extrapolate p-values.
TAIL_CONFIDENCE = 0.9


def tail_survival_ratio(beyond: np.ndarray, reference_distance: np.ndarray) -> np.ndarray:
    """P(D > d) / P(D > max) for distances ``beyond`` the largest of the sorted ``reference_distance``.

    The upper tail is taken as Pareto, (d / max) ** (-1 / xi), with xi the Hill estimate over the
    top 10% (at least 10) of the reference distances, raised to its one-sided ``TAIL_CONFIDENCE``
    upper bound (for a Pareto tail the Hill estimate is xi * Gamma(top, 1) / top). A power law
    decays more slowly than the tail of bounded or Gaussian-like distances, and the bound covers
    an estimate that came out too light, so the extrapolated p-values err towards flagging less.
    A tail too flat to estimate (ties, zeros) is not extrapolated (ratio 1).
    """
    from scipy.special import gammaincinv

    n = len(reference_distance)
    top = min(max(10, n // 10), n - 1)
    threshold = float(reference_distance[n - top - 1])
    largest = float(reference_distance[-1])
    if threshold <= 0 or largest <= threshold:
        return np.ones(len(beyond))
    xi = float(np.log(reference_distance[n - top :] / threshold).mean())
    xi_upper = xi * top / float(gammaincinv(top, 1.0 - TAIL_CONFIDENCE))
    out: np.ndarray = np.minimum(1.0, (beyond / largest) ** (-1.0 / xi_upper))
    return out


def out_of_distribution(
    queries: np.ndarray, reference: np.ndarray, k: int, metric: Metric, fdr: float
) -> OutOfDistribution:
    """Score ``queries`` against ``reference`` (both in one embedding space) with conformal p-values.

    A query drawn from the reference's distribution is exchangeable with the reference records, so
    its p-value is uniform (slightly conservative here: it has n reference records to choose its
    neighbours from, a reference record n - 1). Benjamini-Hochberg over the queries keeps the
    expected share of wrongly flagged records among the flagged at ``fdr`` (conformal p-values are
    positively dependent, which BH tolerates), and a sample of the reference's own distribution
    gets nothing flagged with probability about 1 - ``fdr``. Past the reference's largest distance
    the p-value is extrapolated (``tail_survival_ratio``), so far-off records are told apart from
    the reference's own extremes even when the reference is small.
    """
    n = len(reference)
    if n < 2:
        raise ConfigError(f"an out-of-distribution reference needs at least 2 records, got {n}")
    k = min(k, n - 1)
    own = nearest_neighbours(reference, k, metric)
    reference_distance = np.sort(_mean_distance(own))
    reference_distance = reference_distance[np.isfinite(reference_distance)]
    n = len(reference_distance)
    found = cross_neighbours(queries, reference, k, metric)
    distance = _mean_distance(found)
    distance = np.where(np.isfinite(distance), distance, np.inf)
    at_least = n - np.searchsorted(reference_distance, distance, side="left")
    p_value = (1.0 + at_least) / (n + 1.0)
    # Beyond the farthest reference record the empirical p-value stops at 1 / (n + 1), however far:
    # a small reference could then never flag anything. Continue it along the fitted upper tail.
    beyond = distance > reference_distance[-1]
    if beyond.any():
        p_value[beyond] = tail_survival_ratio(distance[beyond], reference_distance) / (n + 1.0)
    return OutOfDistribution(
        distance=distance,
        nearest=found.index[:, 0],
        reference_distance=reference_distance,
        p_value=p_value,
        extrapolated=beyond,
        flagged=benjamini_hochberg(p_value, fdr),
        k=k,
        exact=own.exact and found.exact,
    )


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
    """Records far from every other record in embedding space, and records unlike a reference.

    In the data: the record's mean distance to its k nearest neighbours relative to theirs (log
    ratio, local like LOF), turned into a robust z-score over the dataset (evidence kind
    ``in_data``). Against an ``--ood-reference`` (the data taken as in-distribution, e.g. the
    training set a new batch is compared with): the mean distance to the k nearest reference
    records, calibrated by the reference's own leave-one-out distances into a conformal p-value
    (evidence kind ``out_of_distribution``, score 1 - p).
    """

    name = "outlier"
    description = (
        "Records unlike the rest: mean distance to their nearest neighbours is extreme "
        "(or, with --ood-reference, unlike every reference record)."
    )

    def applies(self, context: Context) -> str | None:
        """Needs embeddings of at least 20 records (of any number with an --ood-reference)."""
        return embeddings_unavailable(context, 1 if ood_reference(context) is not None else 20)

    def run(self, context: Context) -> pa.Table:
        """In-data outliers (20 records or more), then records out of the reference's distribution."""
        out = FindingsBuilder(self.name)
        emb = shared_embeddings(context)
        if int(emb.ok.sum()) >= 20:
            self._in_data(context, emb, out)
        ref = ood_reference(context)
        if ref is not None:
            self._out_of_distribution(context, emb, ref, out)
        return out.table()

    def _in_data(self, context: Context, emb: Embeddings, out: FindingsBuilder) -> None:
        """One finding per record whose neighbour distance has a robust z-score >= outlier_min_z."""
        settings = model_settings(context)
        nb = shared_neighbours(context)
        rows = np.flatnonzero(emb.ok & (nb.index[:, 0] >= 0))
        if len(rows) < 20:
            return
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
                    f"is {distance[pos]:.3f}, {np.exp(isolation[pos]):.1f}x what those records have to "
                    f"theirs (dataset median {median:.3f}); nearest is {ids[nearest]}"
                ),
                evidence={
                    "kind": "in_data",
                    "mean_neighbour_distance": round(float(distance[pos]), 4),
                    "median_distance": round(median, 4),
                    "robust_z": round(float(z[pos]), 2),
                    "isolation_ratio": round(float(np.exp(isolation[pos])), 2),
                    "embeddings": emb.source,
                    "exact_search": nb.exact,
                },
            )

    def _out_of_distribution(
        self, context: Context, emb: Embeddings, ref: Dataset, out: FindingsBuilder
    ) -> None:
        """Records the reference makes unlikely: Benjamini-Hochberg over their conformal p-values.

        ``related_id`` stays empty: it names a record of the data, and the nearest reference
        record is in the evidence instead.
        """
        settings = model_settings(context)
        ref_emb = shared_reference_embeddings(context)
        ref_rows = np.flatnonzero(ref_emb.ok)
        if len(ref_rows) < MIN_OOD_REFERENCE:
            raise InputError(
                f"--ood-reference {ref.source} has {len(ref_rows)} records that could be embedded; "
                f"at least {MIN_OOD_REFERENCE} are needed"
            )
        rows = np.flatnonzero(emb.ok)
        if len(rows) == 0:
            return
        found = out_of_distribution(
            emb.vectors[rows], ref_emb.vectors[ref_rows], settings.outlier_k, emb.metric, settings.ood_fdr
        )
        quantile = found.reference_quantile
        median = float(np.median(found.reference_distance))
        ids = context.record_ids
        ref_ids = ref.record_ids.to_pylist()
        ref_name = Path(ref.source).name or ref.source
        for pos in np.flatnonzero(found.flagged):
            nearest = str(ref_ids[int(ref_rows[found.nearest[pos]])]) if found.nearest[pos] >= 0 else None
            beyond = quantile[pos] >= 1.0
            than = "any reference record" if beyond else f"{quantile[pos]:.1%} of reference records"
            out.add(
                ids[int(rows[pos])],
                score=float(1.0 - found.p_value[pos]),
                severity="warning" if beyond else "info",
                message=(
                    f"out of distribution vs {ref_name}: mean distance to its {found.k} nearest reference "
                    f"records is {found.distance[pos]:.3f}, more than for {than} (median {median:.3f})"
                    + (f"; nearest is {nearest}" if nearest is not None else "")
                ),
                evidence={
                    "kind": "out_of_distribution",
                    "reference": ref.source,
                    "distance": round(float(found.distance[pos]), 4),
                    "reference_quantile": round(float(quantile[pos]), 4),
                    "p_value": float(found.p_value[pos]),
                    "p_value_extrapolated": bool(found.extrapolated[pos]),
                    "median_reference_distance": round(median, 4),
                    "nearest_reference_id": nearest,
                    "k": found.k,
                    "fdr": settings.ood_fdr,
                    "embeddings": emb.source,
                    "exact_search": found.exact,
                },
            )


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
