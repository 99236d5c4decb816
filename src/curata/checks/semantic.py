"""The ``semantic_duplicate`` check: records whose embeddings are nearly the same direction.

Pairs at or above the threshold (exact search, see ``curata.semantic``) decide which records are
duplicates the way a deduplication would: records are visited from the earliest split and row on; a
record with a pair partner already kept is a duplicate of the most similar such partner, anything else
is kept. Every reported pair is thus itself at or above the threshold (no chains through third
records), and removing the reported records leaves no pair behind. A duplicate in a later split than
the record it repeats is train/test leakage, and says so. Pairs the exact or near duplicate checks
already report are left to them.

The threshold.  ``min_cosine`` is used as given. Left unset, it adapts to the embedding space: how
similar two records must be to repeat each other depends on the encoder and the data (raw pixels of
handwritten digits put most records above 0.95 from some other record; sentence embeddings of varied
text put almost none). The automatic threshold is ``max(0.95, 1 - 0.2 * d75)`` with ``d75`` the 75th
percentile of the records' nearest-neighbour cosine distances: a duplicate must be at least five times
closer than three quarters of the records are to their nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, register
from curata.checks.embedding import embeddings_unavailable, shared_embeddings, shared_neighbours
from curata.checks.groups import shared_clusters, shared_rank
from curata.dataset import SPLIT_ORDER
from curata.engine.base import ColumnRows
from curata.errors import ConfigError

#: The automatic threshold is never below this cosine similarity.
AUTO_FLOOR = 0.95
#: ... and asks duplicates to be this fraction of the 75th-percentile nearest-neighbour distance.
AUTO_FRACTION = 0.2


@dataclass(frozen=True)
class SemanticSettings:
    """``min_cosine``: similarity from which two records are semantic duplicates (None: automatic)."""

    min_cosine: float | None = None

    def __post_init__(self) -> None:
        if self.min_cosine is not None and not 0.0 < self.min_cosine <= 1.0:
            raise ConfigError(f"semantic min_cosine must be in (0, 1], got {self.min_cosine}")


def automatic_threshold(nearest_distance: np.ndarray) -> float:
    """The default threshold for records whose nearest-neighbour cosine distances are given."""
    finite = nearest_distance[np.isfinite(nearest_distance)]
    if finite.size == 0:
        return AUTO_FLOOR
    d75 = float(np.percentile(np.clip(finite, 0.0, 2.0), 75))
    return max(AUTO_FLOOR, 1.0 - AUTO_FRACTION * d75)


def keep_first(pairs: np.ndarray, cosines: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row, the kept row it duplicates (-1 when the row itself is kept).

    Rows are visited by ``rank`` (lowest first); a row with a pair partner that is already kept is a
    duplicate of the most similar one, any other row is kept.
    """
    n = len(rank)
    dup_of = np.full(n, -1, dtype=np.int64)
    if len(pairs) == 0:
        return dup_of
    # Orient every pair so that ``a`` comes first by rank; a row only looks back at earlier rows.
    swap = rank[pairs[:, 0]] > rank[pairs[:, 1]]
    a = np.where(swap, pairs[:, 1], pairs[:, 0])
    b = np.where(swap, pairs[:, 0], pairs[:, 1])
    order = np.lexsort((-cosines, rank[b]))  # by later row's rank, most similar partner first
    a, b = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(b)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        for j in range(s, e):
            if dup_of[a[j]] < 0:  # a kept partner (partners come before the row by rank)
                dup_of[b[s]] = a[j]
                break
    return dup_of


@register
class SemanticDuplicateCheck(Check):
    """SemDeDup-style duplicates in embedding space, reported like the other duplicates."""

    name = "semantic_duplicate"
    description = "Same meaning, different surface: embeddings with cosine similarity above the threshold."

    def applies(self, context: Context) -> str | None:
        """Needs embeddings of at least 2 records; tabular features are not semantic."""
        reason = embeddings_unavailable(context, 2)
        if reason is None and context.dataset.modality == "none" and not _user_embeddings(context):
            return "tabular features have no meaning to compare"
        return reason

    def run(self, context: Context) -> pa.Table:
        """One finding per duplicate, against the kept record it repeats (pairs found by the engine)."""
        from curata.semantic import SemanticDupSettings, semantic_duplicate_pairs

        settings = context.settings.get("semantic") or SemanticSettings()
        emb = shared_embeddings(context)
        rows = np.flatnonzero(emb.ok)
        out = FindingsBuilder(self.name)
        if len(rows) < 2:
            return out.table()
        if settings.min_cosine is not None:
            threshold, rule = float(settings.min_cosine), "given"
        else:
            nearest = shared_neighbours(context).distance[rows, 0].astype(np.float64)
            threshold, rule = automatic_threshold(nearest), "automatic"
        search = SemanticDupSettings(min_cosine=threshold)
        # By reference: a distributed engine's tasks read the vectors from the signal cache's files.
        vectors = ColumnRows(emb.vectors, rows, "embedding", emb.files)
        pairs, cosines = semantic_duplicate_pairs(vectors, search, context.settings.get("engine"))
        if len(pairs) == 0:
            return out.table()
        pairs = rows[pairs]
        n = context.dataset.num_rows
        dup_of = keep_first(pairs, cosines, np.asarray(shared_rank(context)))
        found = np.flatnonzero(dup_of >= 0)
        if context.dataset.modality != "none":
            clusters = shared_clusters(context)
            own, their = clusters.cluster_of(found), clusters.cluster_of(dup_of[found])
            # Already an exact or near duplicate of the same record.
            found = found[(own < 0) | (own != their)]
        splits = context.dataset.splits()
        ids = context.record_ids
        repeats = np.bincount(dup_of[dup_of >= 0], minlength=n)
        for row in found.tolist():
            rep = int(dup_of[row])
            cosine = float(np.dot(emb.vectors[row].astype(np.float64), emb.vectors[rep].astype(np.float64)))
            split, rep_split = (splits[row], splits[rep]) if splits else (None, None)
            leak = (
                split is not None
                and rep_split is not None
                and split != rep_split
                and SPLIT_ORDER.get(split, 1) > SPLIT_ORDER.get(rep_split, 1)
            )
            message = f"same meaning as {ids[rep]} (cosine similarity {cosine:.3f})"
            if leak:
                message += f"; it is in {split} while {ids[rep]} is in {rep_split}: train/test leakage"
            out.add(
                ids[row],
                related_id=ids[rep],
                group_id=f"semantic-{ids[rep]}",
                score=max(0.0, min(1.0, cosine)),
                severity="error" if leak else "warning",
                message=message,
                evidence={
                    "cosine": round(cosine, 4),
                    "threshold": round(threshold, 4),
                    "threshold_rule": rule,
                    "cluster_size": int(repeats[rep]) + 1,
                    "cross_split": bool(leak),
                    "embeddings": emb.source,
                },
            )
        return out.table()


def _user_embeddings(context: Context) -> bool:
    embed = context.settings.get("embed")
    return bool(embed is not None and (embed.embeddings_file or embed.embedding_column))
