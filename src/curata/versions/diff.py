"""``diff``: every record removed, added, relabelled or changed between two versions, and why.

Reasons come from the plans that made the versions: for a change between A and B, the plans of B
and of its ancestors back to A (newest first) are searched for the row that caused it; a record A
had dropped and B keeps is explained by A's plan. With one version, it is compared with its
source as read (its own plan says everything that happened).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curata.errors import WorkspaceError
from curata.versions.store import Version, Workspace

DIFF_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("change", pa.string()),
        ("check", pa.string()),
        ("reason", pa.string()),
        ("split", pa.string()),
        ("old_label", pa.string()),
        ("new_label", pa.string()),
    ]
)
CHANGES = ("removed", "added", "relabelled", "changed")


@dataclass(frozen=True)
class VersionDiff:
    """The difference from ``old`` (None: the new version's source) to ``new``, one row per record."""

    old: str | None
    new: str
    table: pa.Table

    def counts(self) -> dict[str, int]:
        """Records per kind of change."""
        c = Counter(self.table.column("change").to_pylist())
        return {k: c[k] for k in CHANGES if c[k]}

    def rows(self) -> list[dict[str, Any]]:
        """The diff rows as dicts."""
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows


def _plan_rows(v: Version) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in v.plan().to_pylist():
        out.setdefault(str(r["record_id"]), []).append(r)
    return out


def _find(
    plans: list[tuple[str, dict[str, list[dict[str, Any]]]]], rid: str, action: str
) -> tuple[str, dict[str, Any]] | None:
    for vid, rows in plans:
        for r in rows.get(rid, ()):
            if r["action"] == action:
                return vid, r
    return None


def _chain(ws: Workspace, old: str, new: str) -> list[Version]:
    """``new`` and its ancestors down to (not including) ``old``; just ``new`` when old is no ancestor."""
    chain: list[Version] = []
    seen: set[str] = set()
    current: str | None = new
    while current is not None and current != old and current not in seen:
        seen.add(current)
        try:
            v = ws.version(current)
        except WorkspaceError:
            break
        chain.append(v)
        current = v.parent
    if current != old:
        return [ws.version(new)]
    return chain


def diff_versions(workspace: str | Workspace, old: str | None, new: str) -> VersionDiff:
    """Compare version ``old`` with ``new`` (``old=None``: ``new`` against its source)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    new_v = ws.version(new)
    rows: list[dict[str, Any]] = []
    if old is None:
        for r in new_v.plan().to_pylist():
            change = {"drop": "removed", "relabel": "relabelled", "redact": "changed"}.get(r["action"])
            if change is not None:
                rows.append(
                    _row(
                        r["record_id"], change, r["check"], r["reason"], None, r["old_label"], r["new_label"]
                    )
                )
        return VersionDiff(None, new, _table(rows))
    old_v = ws.version(old)
    chain = _chain(ws, old, new)
    newer = [(v.id, _plan_rows(v)) for v in chain]
    older = [(old, _plan_rows(old_v))]
    a = {r["record_id"]: r for r in old_v.manifest().to_pylist()}
    b = {r["record_id"]: r for r in new_v.manifest().to_pylist()}
    for rid, ra in a.items():
        rb = b.get(rid)
        if rb is None:
            hit = _find(newer, rid, "drop")
            if hit:
                vid, r = hit
                rows.append(
                    _row(rid, "removed", r["check"], f"{vid}: {r['reason']}", ra["split"], ra["label"], None)
                )
            else:
                why = f"not in {new}'s source ({new_v.meta.get('source')})"
                rows.append(_row(rid, "removed", None, why, ra["split"], ra["label"], None))
            continue
        if ra["label"] != rb["label"]:
            hit = _find(newer, rid, "relabel")
            undo = _find(older, rid, "relabel")
            if hit:
                check, why = hit[1]["check"], f"{hit[0]}: {hit[1]['reason']}"
            elif undo:
                check, why = (
                    undo[1]["check"],
                    f"{new}'s policy keeps the label; {old} had relabelled it ({undo[1]['reason']})",
                )
            else:
                check, why = None, f"the label differs in {new}'s source"
            rows.append(_row(rid, "relabelled", check, why, rb["split"], ra["label"], rb["label"]))
        if ra["content_hash"] != rb["content_hash"]:
            hit = _find(newer, rid, "redact")
            undo = _find(older, rid, "redact")
            if hit:
                check, why = hit[1]["check"], f"{hit[0]}: {hit[1]['reason']}"
            elif undo:
                check, why = undo[1]["check"], f"{new}'s policy keeps the original; {old} had redacted it"
            else:
                check, why = None, f"the content differs in {new}'s source"
            rows.append(_row(rid, "changed", check, why, rb["split"], rb["label"], rb["label"]))
    for rid, rb in b.items():
        if rid in a:
            continue
        undo = _find(older, rid, "drop")
        if undo:
            r = undo[1]
            why = f"{new}'s policy keeps it; {old} had dropped it: {r['reason']}"
            rows.append(_row(rid, "added", r["check"], why, rb["split"], None, rb["label"]))
        else:
            rows.append(_row(rid, "added", None, f"new in {new}'s source", rb["split"], None, rb["label"]))
    return VersionDiff(old, new, _table(rows))


def _row(
    rid: str,
    change: str,
    check: str | None,
    reason: str,
    split: str | None,
    old_label: str | None,
    new_label: str | None,
) -> dict[str, Any]:
    return {
        "record_id": rid,
        "change": change,
        "check": check,
        "reason": reason,
        "split": split,
        "old_label": old_label,
        "new_label": new_label,
    }


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    order = {c: i for i, c in enumerate(CHANGES)}
    rows.sort(key=lambda r: (order[r["change"]], r["check"] or "", r["record_id"]))
    return pa.Table.from_pylist(rows, schema=DIFF_SCHEMA)
