"""The ``licence`` check: records whose licence is missing, unknown, or against the licence policy."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curata.checks.base import Check, Context, FindingsBuilder, Severity, register
from curata.dataset import Dataset, RoleName
from curata.licences import LicenceSettings, ParsedLicence, parse_licence, policy_verdict, summarise_licences

#: Scores (higher = more certainly a problem): a broken policy is certain, a missing licence
#: nearly so (nothing grants the use), an unrecognised one may still be fine once read by a human.
SCORE_POLICY = 1.0
SCORE_MISSING = 0.8
SCORE_UNKNOWN = 0.6


def _distinct(col: pa.ChunkedArray) -> tuple[list[object], list[int | None]]:
    """Distinct values of ``col`` and, per row, the index of its value (None for null)."""
    encoded = pc.dictionary_encode(col).combine_chunks()
    return encoded.dictionary.to_pylist(), encoded.indices.to_pylist()


def _value_counts(dataset: Dataset, role: RoleName) -> dict[Any, int] | None:
    """Records per value of the column playing ``role`` (None: null), or None when no column does."""
    col = dataset.column(role)
    if col is None:
        return None
    counts = pc.value_counts(col)
    values = counts.field("values").to_pylist()
    return dict(zip(values, counts.field("counts").to_pylist(), strict=True))


def licence_summary(dataset: Dataset) -> dict[str, Any] | None:
    """Records per normalised licence, obligations and sources of ``dataset``; None without a
    licence column (see ``curata.licences.summarise_licences`` for the keys)."""
    licences = _value_counts(dataset, "license")
    if licences is None:
        return None
    return summarise_licences(licences, dataset.column("source"))


def _judge(parsed: ParsedLicence, settings: LicenceSettings) -> tuple[Severity, float, str, str] | None:
    """(severity, score, reason, message) for a licence value, or None when it is fine."""
    if parsed.status == "missing":
        return "warning", SCORE_MISSING, "missing", "no licence stated for this record"
    if parsed.status == "unknown":
        allowed = settings.allow is not None and all(k in settings.allow for k in parsed.unknown_ids)
        if parsed.unknown_ids and allowed and policy_verdict(parsed, settings) is None:
            return None  # a custom licence the policy names explicitly
        message = f"licence '{parsed.raw}' is not recognised ({parsed.problem})"
        if settings.allow is not None:
            # With an allow list, a licence that cannot be matched is not on it.
            return "error", SCORE_POLICY, "unknown", message + "; it is not on the allow list"
        return "warning", SCORE_UNKNOWN, "unknown", message
    verdict = policy_verdict(parsed, settings)
    if verdict is None:
        return None
    names = ", ".join(verdict.licences)
    if verdict.rule == "deny":
        rules = ", ".join(r.removeprefix("deny:") for r in verdict.reasons if r.startswith("deny:"))
        message = f"licence {parsed.label} is denied by the policy (deny: {rules})"
        return "error", SCORE_POLICY, "denied", message
    allowed_list = ", ".join(settings.allow or ()) or "(empty)"
    return (
        "error",
        SCORE_POLICY,
        "not_allowed",
        f"licence {parsed.label} is not on the allow list ({names} not in: {allowed_list})",
    )


@register
class LicenceCheck(Check):
    """Missing, unrecognised and policy-breaking licences, per record (``license`` role)."""

    name = "licence"
    description = "Records with a missing or unrecognised licence, or one the licence policy denies."

    def applies(self, context: Context) -> str | None:
        """Needs a licence column (named license, licence, license_id or spdx, or given explicitly)."""
        return None if context.dataset.roles.license else "no licence column"

    def run(self, context: Context) -> pa.Table:
        """One finding per record whose licence is missing, unknown, denied or not allowed."""
        settings = LicenceSettings.from_value(context.settings.get("licence"))
        col = context.dataset.column("license")
        out = FindingsBuilder(self.name)
        if col is None:
            return out.table()
        values, indices = _distinct(col)
        # Parse and judge each distinct value once; the rows only look the verdict up.
        parsed = [parse_licence(v) for v in values]
        verdicts = [_judge(p, settings) for p in parsed]
        missing = parse_licence(None)
        missing_verdict = _judge(missing, settings)
        ids = context.record_ids
        for row, i in enumerate(indices):
            p, verdict = (missing, missing_verdict) if i is None else (parsed[i], verdicts[i])
            if verdict is None:
                continue
            severity, score, reason, message = verdict
            out.add(
                ids[row],
                score=score,
                severity=severity,
                message=message,
                evidence={
                    "licence": p.label,
                    "raw": p.raw,
                    "reason": reason,
                    "obligations": list(p.obligations),
                },
            )
        return out.table()
