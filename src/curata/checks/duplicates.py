"""Duplicate checks: exact and near duplicates, conflicting labels, and split leakage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, clusters_from_pairs, register
from curata.checks.groups import shared_clusters, shared_exact, shared_near, shared_rank
from curata.dataset import SPLIT_ORDER


def _needs_content(context: Context) -> str | None:
    return None if context.dataset.modality != "none" else "no text or image column"


@register
class ExactDuplicateCheck(Check):
    """Records with identical normalised content (text) or identical decoded pixels (images)."""

    name = "exact_duplicate"
    description = "Identical content: normalised text (NFKC, case, whitespace) or decoded pixels."

    def applies(self, context: Context) -> str | None:
        """Needs text or image content."""
        return _needs_content(context)

    def run(self, context: Context) -> pa.Table:
        """One row per member of a duplicate group other than its first record."""
        exact = shared_exact(context)
        ids = context.record_ids
        sizes = Counter(exact.group[exact.group >= 0].tolist())
        out = FindingsBuilder(self.name)
        what = "text" if context.dataset.modality == "text" else "pixels"
        for row in np.flatnonzero((exact.group >= 0) & (exact.group != np.arange(len(exact.group)))):
            rep = int(exact.group[row])
            key = exact.key(int(rep))
            out.add(
                ids[row],
                related_id=ids[rep],
                group_id=f"exact-{key[:16]}",
                score=1.0,
                severity="warning",
                message=f"identical {what} to {ids[rep]} ({sizes[rep]} copies in this group)",
                evidence={"group_size": sizes[rep]},
            )
        return out.table()


@register
class NearDuplicateCheck(Check):
    """Records whose content is nearly the same (MinHash-LSH for text, perceptual hash for images)."""

    name = "near_duplicate"
    description = "Nearly identical content: MinHash Jaccard for text, perceptual-hash distance for images."

    def applies(self, context: Context) -> str | None:
        """Needs text or image content."""
        return _needs_content(context)

    def run(self, context: Context) -> pa.Table:
        """One row per near-duplicate cluster member (exact representatives only) but the first."""
        exact = shared_exact(context)
        near = shared_near(context)
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        if len(near.pairs) == 0:
            return out.table()
        n = len(exact.group)
        labels = clusters_from_pairs(n, near.pairs)
        involved = np.unique(near.pairs)
        best: dict[int, float] = {}
        for (a, b), sim in zip(near.pairs.tolist(), near.similarity.tolist(), strict=True):
            best[a] = max(best.get(a, 0.0), sim)
            best[b] = max(best.get(b, 0.0), sim)
        by_label: dict[int, list[int]] = {}
        for row in involved.tolist():
            by_label.setdefault(int(labels[row]), []).append(row)
        direct = {
            (int(a), int(b)): float(s)
            for (a, b), s in zip(near.pairs.tolist(), near.similarity.tolist(), strict=True)
        }
        measure = "Jaccard" if context.dataset.modality == "text" else "similarity"
        rank = shared_rank(context)
        for members in by_label.values():
            members.sort(key=lambda r: rank[r])
            rep = members[0]
            for row in members[1:]:
                sim = direct.get((min(rep, row), max(rep, row)), best[row])
                out.add(
                    ids[row],
                    related_id=ids[rep],
                    group_id=f"near-{ids[rep]}",
                    score=sim,
                    severity="warning",
                    message=f"near duplicate of {ids[rep]} ({measure} {sim:.2f}, cluster of {len(members)})",
                    evidence={"similarity": round(sim, 4), "cluster_size": len(members)},
                )
        return out.table()


@dataclass(frozen=True)
class _Disagreement:
    """A cluster member whose value (label, split) differs from the cluster's reference value."""

    row: int
    value: str
    anchor: int
    anchor_value: str
    similarity: float
    cluster: int
    counts: Counter[str]


def _disagreements(
    context: Context,
    values: list[str | None],
    reference: Callable[[Counter[str], list[tuple[int, str]]], str],
) -> Iterator[_Disagreement]:
    """Yield every duplicate-cluster member whose value differs from ``reference(counts, present)``.

    The anchor is the earliest record holding the reference value; members without a value are
    ignored, and clusters with a single value yield nothing.
    """
    clusters = shared_clusters(context)
    for first, members in clusters.members().items():
        present = [(int(r), str(values[r])) for r in members if values[r] not in (None, "")]
        counts = Counter(v for _, v in present)
        if len(counts) < 2:
            continue
        ref = reference(counts, present)
        anchor = min(r for r, v in present if v == ref)
        for row, value in present:
            if value != ref:
                sim = clusters.pair_similarity(row, anchor)
                yield _Disagreement(row, value, anchor, ref, sim, first, counts)


def _majority(counts: Counter[str], present: list[tuple[int, str]]) -> str:
    # Ties go to the value of the earliest record, so the result does not depend on hashing.
    return max(counts, key=lambda v: (counts[v], -min(r for r, x in present if x == v)))


def _earliest_split(counts: Counter[str], present: list[tuple[int, str]]) -> str:
    return min(counts, key=lambda s: (SPLIT_ORDER.get(s, 1), s))


@register
class ConflictingLabelsCheck(Check):
    """Duplicate or near-duplicate content carrying different labels."""

    name = "conflicting_labels"
    description = "The same or nearly the same content with different labels."

    def applies(self, context: Context) -> str | None:
        """Needs content and a label role."""
        return _needs_content(context) or (None if context.dataset.roles.label else "no label column")

    def run(self, context: Context) -> pa.Table:
        """Report members whose label differs from their cluster's most common label."""
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        for d in _disagreements(context, context.dataset.labels(), _majority):
            same = "the same" if d.similarity >= 1.0 else "nearly the same"
            out.add(
                ids[d.row],
                related_id=ids[d.anchor],
                group_id=f"dup-{ids[d.cluster]}",
                score=d.similarity,
                severity="error",
                message=f"labelled '{d.value}' but {ids[d.anchor]} with {same} content is '{d.anchor_value}'",
                evidence={
                    "label": d.value,
                    "other_label": d.anchor_value,
                    "labels": dict(d.counts),
                    "similarity": round(d.similarity, 4),
                },
            )
        return out.table()


@register
class SplitLeakageCheck(Check):
    """Exact or near duplicates whose members sit in different splits."""

    name = "split_leakage"
    description = "The same or nearly the same content in more than one split (reported on the later split)."

    def applies(self, context: Context) -> str | None:
        """Needs content and a split role."""
        return _needs_content(context) or (None if context.dataset.roles.split else "no split column")

    def run(self, context: Context) -> pa.Table:
        """Report each member in a later split than its cluster's earliest split (test, else val)."""
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        for d in _disagreements(context, context.dataset.splits(), _earliest_split):
            kind = "identical" if d.similarity >= 1.0 else "near-duplicate"
            out.add(
                ids[d.row],
                related_id=ids[d.anchor],
                group_id=f"dup-{ids[d.cluster]}",
                score=d.similarity,
                severity="error",
                message=f"{d.value} record is {kind} to {d.anchor_value} record {ids[d.anchor]}",
                evidence={
                    "split": d.value,
                    "other_split": d.anchor_value,
                    "similarity": round(d.similarity, 4),
                },
            )
        return out.table()
