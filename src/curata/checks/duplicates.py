"""Duplicate checks: exact and near duplicates, conflicting labels, and split leakage."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from curata.checks.base import (
    FINDINGS_SCHEMA,
    Check,
    Context,
    FindingsBuilder,
    chunked_findings,
    empty_findings,
    register,
)
from curata.checks.groups import (
    candidate_nodes,
    ranked_components,
    shared_clusters,
    shared_exact,
    shared_near,
    workspace_temp,
)
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
        from curata import outofcore

        exact = shared_exact(context)
        with outofcore.configured(**workspace_temp(context)):
            rows, reps = exact.duplicates()
            if len(rows) == 0:
                return empty_findings()
            # A group's size is its copies plus its first row: copies counted at the first row.
            copies = outofcore.row_array(len(exact.group), np.int32)
            for lo, hi in outofcore.row_chunks(len(reps)):
                np.add.at(copies, np.asarray(reps[lo:hi]), 1)
        what = "text" if context.dataset.modality == "text" else "pixels"

        def chunk(lo: int, hi: int) -> pa.Table:
            rep = np.asarray(reps[lo:hi])
            ids, rel = _record_ids(context, np.asarray(rows[lo:hi])), _record_ids(context, rep)
            size = (np.asarray(copies[rep], np.int64) + 1).tolist()
            # One key lookup per group in the chunk, not per row.
            firsts, inverse = np.unique(rep, return_inverse=True)
            keys = [f"exact-{exact.key(int(r))[:16]}" for r in firsts.tolist()]
            return _findings(
                self.name,
                ids,
                rel,
                [keys[i] for i in inverse.tolist()],
                [1.0] * (hi - lo),
                [
                    f"identical {what} to {r} ({s} copies in this group)"
                    for r, s in zip(rel, size, strict=True)
                ],
                [json.dumps({"group_size": s}) for s in size],
            )

        return _chunked(context, len(rows), chunk)


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
        from curata import outofcore

        near = shared_near(context)
        if len(near.pairs) == 0:
            return empty_findings()
        sims = near.similarity
        with outofcore.configured(**workspace_temp(context)):
            involved, local = candidate_nodes(near.pairs, context.dataset.num_rows)
            # Clusters are connected components, each represented by its row of lowest rank.
            rep, size, member = ranked_components(context, involved, local)
            # A member's similarity: its verified pair with the representative, else its best
            # pair. Per node, filled by chunks of pairs into ``outofcore.row_array``s.
            nodes = len(involved)
            best = outofcore.row_array(nodes, np.float64)
            direct = outofcore.filled_row_array(nodes, np.float64, -1.0)
            for lo, hi in outofcore.row_chunks(len(local)):
                a, b = np.asarray(local[lo:hi, 0]), np.asarray(local[lo:hi, 1])
                s = np.asarray(sims[lo:hi], dtype=np.float64)
                np.maximum.at(best, a, s)
                np.maximum.at(best, b, s)
                for x, y in ((a, b), (b, a)):
                    hit = rep[x] == y
                    direct[x[hit]] = s[hit]
            del local
        measure = "Jaccard" if context.dataset.modality == "text" else "similarity"

        def chunk(lo: int, hi: int) -> pa.Table:
            mine = np.asarray(member[lo:hi])
            rows, rep_rows = np.asarray(involved[mine]), np.asarray(involved[np.asarray(rep[mine])])
            ids, rel = _record_ids(context, rows), _record_ids(context, rep_rows)
            d = np.asarray(direct[mine])
            s = np.where(d >= 0, d, np.asarray(best[mine])).tolist()
            c = np.asarray(size[mine]).tolist()
            return _findings(
                self.name,
                ids,
                rel,
                [f"near-{r}" for r in rel],
                s,
                [
                    f"near duplicate of {r} ({measure} {x:.2f}, cluster of {k})"
                    for r, x, k in zip(rel, s, c, strict=True)
                ],
                [
                    json.dumps({"cluster_size": k, "similarity": round(x, 4)})
                    for x, k in zip(s, c, strict=True)
                ],
            )

        return _chunked(context, len(member), chunk)


#: Findings built at once by the vectorised duplicate checks (bounds their Python objects).
FINDINGS_CHUNK = 100_000


def _record_ids(context: Context, rows: np.ndarray) -> list[str]:
    """Record ids of ``rows`` (taken from the Arrow column, never the whole list at once)."""
    return context.record_ids.take(rows)


def _findings(
    check: str,
    record_ids: list[str],
    related_ids: list[str],
    group_ids: list[str],
    scores: list[float],
    messages: list[str],
    evidence: list[str],
) -> pa.Table:
    """A findings table (``warning`` rows) from columns, as FindingsBuilder would make it."""
    m = len(record_ids)
    return pa.table(
        {
            "check": pa.array([check] * m, pa.string()),
            "record_id": pa.array(record_ids, pa.string()),
            "related_id": pa.array(related_ids, pa.string()),
            "group_id": pa.array(group_ids, pa.string()),
            "score": pa.array([float(min(1.0, max(0.0, x))) for x in scores], pa.float64()),
            "severity": pa.array(["warning"] * m, pa.string()),
            "message": pa.array(messages, pa.string()),
            "evidence": pa.array(evidence, pa.string()),
        },
        schema=FINDINGS_SCHEMA,
    )


def _chunked(context: Context, total: int, make: Callable[[int, int], pa.Table]) -> pa.Table:
    """``make(lo, hi)`` over chunks of FINDINGS_CHUNK rows (spilled to disk when many)."""
    return chunked_findings(context, total, make, FINDINGS_CHUNK)


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
    role: Literal["label", "split"],
    reference: Callable[[Counter[str], list[tuple[int, str]]], str],
) -> Iterator[_Disagreement]:
    """Yield every duplicate-cluster member whose label or split differs from
    ``reference(counts, present)``.

    The anchor is the earliest record holding the reference value; members without a value are
    ignored, and clusters with a single value yield nothing. Values are read as codes
    (``Dataset.role_codes``): no Python list of every record's value.
    """
    codes, names = context.dataset.role_codes(role)
    clusters = shared_clusters(context)
    for first, members in clusters.members():
        present = [
            (int(r), names[c])
            for r, c in zip(members.tolist(), np.asarray(codes[members]).tolist(), strict=True)
            if c >= 0 and names[c] != ""
        ]
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
        for d in _disagreements(context, "label", _majority):
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
        for d in _disagreements(context, "split", _earliest_split):
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
