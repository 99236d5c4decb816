"""Findings + dataset + policy -> Plan: a reviewable table of what happens to each record, and why.

Resolution order (each record gets at most one ``drop`` row, naming the check that caused it):

1. Split leakage (``split_leakage: drop``): in every duplicate cluster that leaks across splits,
   the copies in earlier splits (the training side) are dropped; the later split's copies stay.
2. Every other ``drop`` except duplicates (corrupt, contamination, ...).
3. Duplicates (exact / near / semantic with ``drop``): each cluster keeps one surviving record,
   the one of lowest representative rank (earliest split, then row), and drops the rest. Running
   after 1 and 2 means a cluster never loses its last copy because its representative was dropped
   for another reason.
4. ``relabel`` (label_issue at or above ``min_confidence``, else flagged), ``redact`` (pii), ``flag``
   for records still kept.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curata.curate.policy import DUPLICATE_CHECKS, Policy
from curata.dataset import SPLIT_ORDER, Dataset

#: Columns of ``plan.parquet``; one row per (record, action, check).
PLAN_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("action", pa.string()),
        ("check", pa.string()),
        ("score", pa.float64()),
        ("reason", pa.string()),
        ("old_label", pa.string()),
        ("new_label", pa.string()),
    ]
)
_ACTION_ORDER = {"drop": 0, "relabel": 1, "redact": 2, "flag": 3}


@dataclass(frozen=True)
class Plan:
    """What applying a policy does: ``table`` (``PLAN_SCHEMA``) plus the evidence redaction needs.

    ``notes`` say what the plan could not cover (a check that failed or is not installed).
    """

    table: pa.Table
    records_in: int
    redactions: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        """The plan rows as dicts."""
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows

    def dropped(self) -> set[str]:
        """Record ids the plan removes."""
        return {r["record_id"] for r in self.rows() if r["action"] == "drop"}

    def relabels(self) -> dict[str, str]:
        """New label per relabelled record id."""
        return {r["record_id"]: r["new_label"] for r in self.rows() if r["action"] == "relabel"}

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per action and check: ``{"drop": {"exact_duplicate": 3}, ...}``."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows():
            per = out.setdefault(r["action"], {})
            per[r["check"]] = per.get(r["check"], 0) + 1
        return {
            a: dict(sorted(c.items())) for a, c in sorted(out.items(), key=lambda kv: _ACTION_ORDER[kv[0]])
        }

    @property
    def records_out(self) -> int:
        """Records left after the plan's drops."""
        return self.records_in - len(self.dropped())


class _Components:
    """Union-find over record ids (path halving), for duplicate clusters rebuilt from findings."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[str]]:
        by_root: dict[str, list[str]] = defaultdict(list)
        for x in self.parent:
            by_root[self.find(x)].append(x)
        return [sorted(g) for _, g in sorted(by_root.items())]


def _evidence(row: Mapping[str, Any]) -> dict[str, Any]:
    raw = row.get("evidence")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _split_order(split: str | None) -> int | None:
    return None if split is None else SPLIT_ORDER.get(split, 1)


class _Builder:
    """Accumulates plan rows; a dropped record gets exactly one row and no other action."""

    def __init__(self, dataset: Dataset) -> None:
        from curata.checks.groups import representative_rank

        self.ids: list[str] = [str(x) for x in dataset.record_ids.to_pylist()]
        self.row_of = {rid: i for i, rid in enumerate(self.ids)}
        self.labels = dataset.labels()
        self.splits = dataset.splits()
        self.rank = representative_rank(dataset)
        self.dropped: dict[str, dict[str, Any]] = {}
        self.others: dict[tuple[str, str, str], dict[str, Any]] = {}

    def label(self, rid: str) -> str | None:
        return self.labels[self.row_of[rid]] if self.labels else None

    def split(self, rid: str) -> str | None:
        return self.splits[self.row_of[rid]] if self.splits else None

    def drop(self, rid: str, check: str, score: float, reason: str) -> None:
        if rid in self.row_of and rid not in self.dropped:
            self.dropped[rid] = self._row(rid, "drop", check, score, reason)

    def add(
        self, rid: str, action: str, check: str, score: float, reason: str, new_label: str | None = None
    ) -> None:
        if rid not in self.row_of or rid in self.dropped:
            return
        key = (rid, action, check)
        if key not in self.others or score > self.others[key]["score"]:
            self.others[key] = self._row(rid, action, check, score, reason, new_label)

    def _row(
        self, rid: str, action: str, check: str, score: float, reason: str, new_label: str | None = None
    ) -> dict[str, Any]:
        return {
            "record_id": rid,
            "action": action,
            "check": check,
            "score": float(score),
            "reason": reason,
            "old_label": self.label(rid),
            "new_label": new_label,
        }

    def table(self) -> pa.Table:
        rows = list(self.dropped.values()) + [r for k, r in self.others.items() if k[0] not in self.dropped]
        rows.sort(key=lambda r: (_ACTION_ORDER[r["action"]], r["check"], self.row_of[r["record_id"]]))
        return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


def build_plan(
    findings: pa.Table,
    dataset: Dataset,
    policy: Policy,
    check_status: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Turn ``findings`` of ``dataset`` into a Plan following ``policy`` (see the module docstring)."""
    rows: list[dict[str, Any]] = findings.to_pylist()
    b = _Builder(dataset)
    by_check: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_check[r["check"]].append(r)

    def action(check: str) -> str:
        return policy.action_for(check).action

    if action("split_leakage") == "drop":
        _resolve_leakage(b, by_check, semantic_too=action("semantic_duplicate") == "drop")
    for r in rows:
        check = r["check"]
        if action(check) == "drop" and check not in DUPLICATE_CHECKS and check != "split_leakage":
            b.drop(r["record_id"], check, r["score"], r["message"])
    _resolve_duplicates(b, by_check, [c for c in DUPLICATE_CHECKS if action(c) == "drop"])

    redactions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        check, rid = r["check"], r["record_id"]
        act = action(check)
        if rid in b.dropped or act in ("keep", "drop"):
            continue
        if act == "relabel":
            _relabel(b, r, float(policy.setting(check, "min_confidence", 1.0)))
        elif act == "redact":
            ev = _evidence(r)
            if ev.get("spans") or ev.get("columns"):
                redactions[rid].append(ev)
                b.add(rid, "redact", check, r["score"], r["message"])
            else:
                b.add(rid, "flag", check, r["score"], f"{r['message']} (nothing to redact in its evidence)")
        else:
            b.add(rid, "flag", check, r["score"], r["message"])
    table = b.table()
    kept_redactions = {rid: tuple(evs) for rid, evs in redactions.items() if rid not in b.dropped}
    return Plan(table, len(b.ids), kept_redactions, tuple(_notes(policy, check_status)))


def _relabel(b: _Builder, r: Mapping[str, Any], min_confidence: float) -> None:
    ev = _evidence(r)
    suggested = ev.get("suggested_label")
    prob = ev.get("suggested_probability")
    rid, check = r["record_id"], r["check"]
    if suggested is None or not isinstance(prob, int | float):
        b.add(rid, "flag", check, r["score"], f"{r['message']} (no suggested label to take)")
    elif float(prob) >= min_confidence:
        old = b.label(rid)
        reason = f"relabelled '{old}' -> '{suggested}': predicted with probability {float(prob):.2f}"
        b.add(rid, "relabel", check, r["score"], reason, new_label=str(suggested))
    else:
        b.add(
            rid,
            "flag",
            check,
            r["score"],
            f"{r['message']}; probability {float(prob):.2f} is below min_confidence {min_confidence:g}, "
            "so the label is kept",
        )


def _resolve_leakage(b: _Builder, by_check: Mapping[str, list[dict[str, Any]]], semantic_too: bool) -> None:
    """Drop the earlier-split copies of every cluster that leaks across splits."""
    comps = _Components()
    seeds: dict[str, dict[str, Any]] = {}
    for check in ("exact_duplicate", "near_duplicate", "split_leakage", "semantic_duplicate"):
        for r in by_check.get(check, ()):
            if not r["related_id"] or r["related_id"] not in b.row_of:
                continue
            cross = check == "split_leakage" or (
                check == "semantic_duplicate" and _evidence(r).get("cross_split")
            )
            if check == "semantic_duplicate" and not (semantic_too and cross):
                continue
            comps.union(r["record_id"], r["related_id"])
            if cross:
                seeds[r["record_id"]] = r
    for members in comps.groups():
        leaks = [seeds[m] for m in members if m in seeds]
        if not leaks:
            continue
        orders = {m: o for m in members if (o := _split_order(b.split(m))) is not None}
        latest = max(orders.values())
        kept = [m for m in members if orders.get(m) == latest]
        score = max(float(s["score"]) for s in leaks)
        check = leaks[0]["check"]
        for m in sorted(members, key=lambda x: b.row_of[x]):
            if m in orders and orders[m] < latest:
                reason = (
                    f"{b.split(m)} copy of {b.split(kept[0])} record {kept[0]}: the training-side copy is "
                    "removed so the evaluation split keeps its record and no longer leaks"
                )
                b.drop(m, check, score, reason)


def _resolve_duplicates(
    b: _Builder, by_check: Mapping[str, list[dict[str, Any]]], checks: Iterable[str]
) -> None:
    """Keep one surviving record per duplicate cluster (lowest representative rank), drop the rest."""
    comps = _Components()
    own: dict[str, dict[str, Any]] = {}
    for check in checks:
        for r in by_check.get(check, ()):
            rid, rel = r["record_id"], r["related_id"]
            if not rel or rel not in b.row_of or rid not in b.row_of:
                continue
            comps.union(rid, rel)
            own.setdefault(rid, r)
    for members in comps.groups():
        survivors = [m for m in members if m not in b.dropped]
        if not survivors:
            continue
        keep = min(survivors, key=lambda m: int(b.rank[b.row_of[m]]))
        for m in sorted(survivors, key=lambda x: b.row_of[x]):
            if m == keep:
                continue
            finding = own.get(m)
            if finding is not None:
                note = "" if finding["related_id"] == keep else f"; {finding['related_id']} was dropped"
                b.drop(m, finding["check"], finding["score"], f"{finding['message']}{note}; kept {keep}")
            else:
                check = next(iter(checks), "exact_duplicate")
                b.drop(m, check, 1.0, f"in a duplicate cluster whose kept record is {keep}")


def _notes(policy: Policy, check_status: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    notes: list[str] = []
    status = check_status or {}
    for name, cp in policy.checks.items():
        if not cp.enabled or cp.action == "keep":
            continue
        entry = status.get(name)
        if entry is None and check_status is not None:
            notes.append(
                f"check {name} is not installed in this curata: its '{cp.action}' action had no effect"
            )
        elif entry is not None and entry.get("status") == "failed":
            notes.append(f"check {name} failed ({entry.get('error')}): the plan holds none of its actions")
    return notes


def plan_examples(plan: Plan, per_group: int = 3) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Up to ``per_group`` example rows per (action, check), highest score first."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in plan.rows():
        groups[(r["action"], r["check"])].append(r)
    return {k: sorted(v, key=lambda r: -float(r["score"] or 0.0))[:per_group] for k, v in groups.items()}
