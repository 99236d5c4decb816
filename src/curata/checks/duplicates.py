"""Duplicate checks: exact and near duplicates, conflicting labels, and split leakage."""

from __future__ import annotations

from collections import Counter

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
        clusters = shared_clusters(context)
        labels = context.dataset.labels()
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        for first, members in clusters.members().items():
            present = [(int(r), labels[r]) for r in members if labels[r] not in (None, "")]
            counts = Counter(label for _, label in present)
            if len(counts) < 2:
                continue
            # Ties go to the label of the earliest record, so the result does not depend on hashing.
            majority = max(counts, key=lambda lab: (counts[lab], -min(r for r, x in present if x == lab)))
            anchor = min(r for r, lab in present if lab == majority)
            for row, label in present:
                if label == majority:
                    continue
                sim = clusters.pair_similarity(row, anchor)
                same = "the same" if sim >= 1.0 else "nearly the same"
                out.add(
                    ids[row],
                    related_id=ids[anchor],
                    group_id=f"dup-{ids[first]}",
                    score=sim,
                    severity="error",
                    message=f"labelled '{label}' but {ids[anchor]} with {same} content is '{majority}'",
                    evidence={
                        "label": label,
                        "other_label": majority,
                        "labels": dict(counts),
                        "similarity": round(sim, 4),
                    },
                )
        return out.table()


def _split_rank(split: str) -> int:
    return SPLIT_ORDER.get(split, 1)


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
        clusters = shared_clusters(context)
        splits = context.dataset.splits()
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        for first, members in clusters.members().items():
            present = [(int(r), splits[r]) for r in members if splits[r] is not None]
            names = {s for _, s in present}
            if len(names) < 2:
                continue
            earliest = min(names, key=lambda s: (_split_rank(s), s))
            anchor = min(r for r, s in present if s == earliest)
            for row, split in present:
                if split == earliest:
                    continue
                sim = clusters.pair_similarity(row, anchor)
                kind = "identical" if sim >= 1.0 else "near-duplicate"
                out.add(
                    ids[row],
                    related_id=ids[anchor],
                    group_id=f"dup-{ids[first]}",
                    score=sim,
                    severity="error",
                    message=f"{split} record is {kind} to {earliest} record {ids[anchor]}",
                    evidence={"split": split, "other_split": earliest, "similarity": round(sim, 4)},
                )
        return out.table()
