"""The ``semantic_duplicate`` check: records whose embeddings are nearly the same direction.

Pairs at or above ``min_cosine`` (exact search, see ``curata.semantic``) are joined into clusters;
every member but the cluster's representative (earliest split, then row) is reported against it,
unless the exact or near duplicate checks already report the same two records. A member in a later
split than its representative is train/test leakage, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, clusters_from_pairs, register
from curata.checks.embedding import embeddings_unavailable, shared_embeddings
from curata.checks.groups import shared_clusters, shared_rank
from curata.dataset import SPLIT_ORDER
from curata.errors import ConfigError


@dataclass(frozen=True)
class SemanticSettings:
    """``min_cosine``: similarity from which two records are semantic duplicates."""

    min_cosine: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 < self.min_cosine <= 1.0:
            raise ConfigError(f"semantic min_cosine must be in (0, 1], got {self.min_cosine}")


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
        """One finding per cluster member other than the representative."""
        from curata.semantic import SemanticDupSettings, semantic_duplicate_pairs

        settings = context.settings.get("semantic") or SemanticSettings()
        emb = shared_embeddings(context)
        rows = np.flatnonzero(emb.ok)
        out = FindingsBuilder(self.name)
        if len(rows) < 2:
            return out.table()
        pairs, _ = semantic_duplicate_pairs(
            emb.vectors[rows], SemanticDupSettings(min_cosine=settings.min_cosine)
        )
        if len(pairs) == 0:
            return out.table()
        pairs = rows[pairs]
        n = context.dataset.num_rows
        labels = clusters_from_pairs(n, pairs)
        rank = shared_rank(context)
        best = np.full(n, n, dtype=np.int64)
        np.minimum.at(best, labels, rank)
        order = np.argsort(rank, kind="stable")
        rep_of = order[np.minimum(best[labels], n - 1)]
        in_pair = np.zeros(n, dtype=bool)
        in_pair[pairs.ravel()] = True
        duplicate_cluster = shared_clusters(context).cluster if context.dataset.modality != "none" else None
        splits = context.dataset.splits()
        ids = context.record_ids
        sizes = np.bincount(labels[in_pair], minlength=n)
        for row in np.flatnonzero(in_pair & (rep_of != np.arange(n))):
            rep = int(rep_of[row])
            if (
                duplicate_cluster is not None
                and duplicate_cluster[row] >= 0
                and (duplicate_cluster[row] == duplicate_cluster[rep])
            ):
                continue  # already an exact or near duplicate of the same record
            cosine = float(np.dot(emb.vectors[row], emb.vectors[rep]))
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
                    "cluster_size": int(sizes[labels[row]]),
                    "cross_split": bool(leak),
                    "embeddings": emb.source,
                },
            )
        return out.table()


def _user_embeddings(context: Context) -> bool:
    embed = context.settings.get("embed")
    return bool(embed is not None and (embed.embeddings_file or embed.embedding_column))
