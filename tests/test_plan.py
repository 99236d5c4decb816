"""Plans from synthetic findings: duplicate representatives, leakage, relabel, redact, flag; redaction."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from curata.checks.base import findings_table
from curata.curate.plan import build_plan
from curata.curate.policy import parse_policy
from curata.curate.redact import REDACTED_CELL, redact_text, redacted_values
from curata.dataset import Dataset
from curata.io import read_dataset

from conftest import random_text, write_parquet


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    rng = random.Random(5)
    splits = {"a": "train", "b": "train", "c": "test", "d": "train", "e": "val", "f": "test", "g": "train"}
    rows = [
        {"id": rid, "text": random_text(rng), "label": "x" if rid < "e" else "y", "split": split}
        for rid, split in splits.items()
    ]
    return read_dataset(write_parquet(tmp_path / "d.parquet", rows))


def finding(
    check: str, rid: str, related: str | None = None, score: float = 1.0, **evidence: Any
) -> dict[str, Any]:
    return {
        "check": check,
        "record_id": rid,
        "related_id": related,
        "group_id": None,
        "score": score,
        "severity": "warning",
        "message": f"{check} on {rid}",
        "evidence": json.dumps(evidence) if evidence else None,
    }


def actions(dataset: Dataset, policy: str, *rows: dict[str, Any]) -> dict[str, list[str]]:
    plan = build_plan(findings_table(list(rows)), dataset, parse_policy(policy))
    out: dict[str, list[str]] = {}
    for r in plan.rows():
        out.setdefault(r["record_id"], []).append(r["action"])
    return out


DROP_ALL = "checks:\n  exact_duplicate: drop\n  near_duplicate: drop\n  split_leakage: drop\n"


def test_duplicates_keep_the_representative(dataset: Dataset) -> None:
    got = actions(
        dataset, DROP_ALL, finding("exact_duplicate", "b", "a"), finding("near_duplicate", "d", "a", 0.9)
    )
    assert got == {"b": ["drop"], "d": ["drop"]}


def test_leakage_drops_the_training_copy_and_keeps_the_test_copy(dataset: Dataset) -> None:
    # The checks report c (test) against its train copy a: exact_duplicate and split_leakage.
    rows = (finding("exact_duplicate", "c", "a"), finding("split_leakage", "c", "a"))
    got = actions(dataset, DROP_ALL, *rows)
    assert got == {"a": ["drop"]}
    plan = build_plan(findings_table(list(rows)), dataset, parse_policy(DROP_ALL))
    (row,) = plan.rows()
    assert row["check"] == "split_leakage" and "training-side" in row["reason"]


def test_leakage_flagged_leaves_the_duplicate_rule_alone(dataset: Dataset) -> None:
    policy = "checks:\n  exact_duplicate: drop\n  split_leakage: flag\n"
    got = actions(dataset, policy, finding("exact_duplicate", "c", "a"), finding("split_leakage", "c", "a"))
    assert got == {"c": ["drop"]}  # train first: the representative a stays


def test_leakage_with_train_duplicates_and_three_splits(dataset: Dataset) -> None:
    # a, b, d (train), e (val), f (test): one cluster. Only the latest split's copy survives.
    rows = (
        finding("exact_duplicate", "b", "a"),
        finding("exact_duplicate", "d", "a"),
        finding("exact_duplicate", "e", "a"),
        finding("exact_duplicate", "f", "a"),
        finding("split_leakage", "e", "a"),
        finding("split_leakage", "f", "a"),
    )
    got = actions(dataset, DROP_ALL, *rows)
    assert got == {"a": ["drop"], "b": ["drop"], "d": ["drop"], "e": ["drop"]}


def test_a_cluster_keeps_a_copy_when_its_representative_is_dropped_elsewhere(dataset: Dataset) -> None:
    policy = DROP_ALL + "  empty: drop\n"
    got = actions(dataset, policy, finding("exact_duplicate", "b", "a"), finding("empty", "a"))
    assert got == {"a": ["drop"]}  # b becomes the kept copy


def test_relabel_above_and_below_min_confidence(dataset: Dataset) -> None:
    policy = "checks:\n  label_issue: {action: relabel, min_confidence: 0.9}\n"
    rows = (
        finding("label_issue", "a", suggested_label="y", suggested_probability=0.95),
        finding("label_issue", "b", suggested_label="y", suggested_probability=0.6),
    )
    plan = build_plan(findings_table(list(rows)), dataset, parse_policy(policy))
    by_id = {r["record_id"]: r for r in plan.rows()}
    assert by_id["a"]["action"] == "relabel"
    assert (by_id["a"]["old_label"], by_id["a"]["new_label"]) == ("x", "y")
    assert by_id["b"]["action"] == "flag" and "below min_confidence 0.9" in by_id["b"]["reason"]
    assert plan.relabels() == {"a": "y"}


def test_redact_flag_keep_and_summary(dataset: Dataset) -> None:
    policy = "default_action: keep\nchecks:\n  pii: redact\n  outlier: flag\n"
    rows = (
        finding("pii", "a", field="text", spans=[{"start": 0, "end": 3, "type": "EMAIL"}]),
        finding("pii", "b"),  # no evidence: cannot be redacted, so it is flagged
        finding("outlier", "c", score=0.7),
        finding("low_quality", "d"),  # default_action keep: not in the plan
    )
    plan = build_plan(findings_table(list(rows)), dataset, parse_policy(policy))
    assert plan.summary() == {"redact": {"pii": 1}, "flag": {"outlier": 1, "pii": 1}}
    assert set(plan.redactions) == {"a"}
    assert plan.records_in == plan.records_out == 7


def test_a_dropped_record_gets_one_row_only(dataset: Dataset) -> None:
    policy = DROP_ALL + "  outlier: flag\n  label_issue: {action: relabel, min_confidence: 0.5}\n"
    rows = (
        finding("exact_duplicate", "b", "a"),
        finding("outlier", "b"),
        finding("label_issue", "b", suggested_label="y", suggested_probability=0.99),
    )
    assert actions(dataset, policy, *rows) == {"b": ["drop"]}


def test_plan_notes_a_failed_check(dataset: Dataset) -> None:
    plan = build_plan(
        findings_table([]),
        dataset,
        parse_policy("checks:\n  pii: redact\n"),
        {"pii": {"status": "failed", "error": "boom"}},
    )
    assert any("pii failed" in n for n in plan.notes)


# ---------------------------------------------------------------- redaction


def test_redact_text_replaces_spans_with_their_type() -> None:
    text = "mail bob@example.com or call 555-0100 now"
    spans = [{"start": 29, "end": 37, "type": "phone"}, {"start": 5, "end": 20, "type": "EMAIL"}]
    assert redact_text(text, spans) == "mail [EMAIL] or call [PHONE] now"


def test_redact_text_merges_overlaps_and_clips() -> None:
    text = "abcdefghij"
    spans = [
        {"start": 2, "end": 6, "type": "A"},
        {"start": 4, "end": 8, "type": "B"},
        {"start": 9, "end": 99},
    ]
    assert redact_text(text, spans) == "ab[A]i[PII]"
    assert redact_text(text, [{"start": "x", "end": 3}, {"start": 5, "end": 5}]) == text


def test_redacted_values_for_spans_and_cells() -> None:
    evidences = [
        {"field": "text", "spans": [{"start": 0, "end": 5, "type": "PERSON"}]},
        {"field": "text", "spans": [{"start": 13, "end": 17, "type": "CITY"}]},
        {"columns": ["email", "absent"]},
    ]
    values = {"text": "Alice was in Rome", "email": "a@b.c", "label": "x"}
    assert redacted_values(evidences, values) == {"text": "[PERSON] was in [CITY]", "email": REDACTED_CELL}
