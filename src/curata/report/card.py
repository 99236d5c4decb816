"""The dataset card: a Hugging Face ``README.md`` with Datasheets-for-Datasets sections, filled from a
curated version folder (and written with its Croissant metadata by ``write_card``).

The version folder (``.curata/versions/<id>/``) holds ``version.json``, ``manifest.parquet``
(one row per record of the version), ``plan.parquet`` (the actions that made it) and ``audit/``
(the ``report.json`` and ``findings.parquet`` of the audit the plan came from). The card states
only what curata measured there; whatever it cannot know is marked for the dataset owner.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curata.errors import InputError
from curata.licences import OBLIGATIONS, hf_licence_id, summarise_licences, summarise_sources

#: What a section curata cannot fill says.
TO_COMPLETE = "_To be completed by the dataset owner._"
#: How tables name a missing value.
MISSING = "(missing)"
#: The files ``write_card`` writes; an output folder holding anything else is refused.
CARD_FILES = ("README.md", "croissant.json")

#: Plan actions that take a record out of the version, and checks whose removals the card names.
DROP_ACTIONS = frozenset({"drop", "remove", "delete", "exclude"})
DUPLICATE_CHECKS = frozenset({"exact_duplicate", "near_duplicate", "semantic_duplicate"})
LEAKAGE_CHECKS = frozenset({"split_leakage"})
#: Rows shown in a table before the rest are summed into one line.
MAX_TABLE_ROWS = 30

#: Hugging Face size categories: (upper bound exclusive, name).
_SIZE_CATEGORIES: tuple[tuple[float, str], ...] = (
    (1e3, "n<1K"),
    (1e4, "1K<n<10K"),
    (1e5, "10K<n<100K"),
    (1e6, "100K<n<1M"),
    (1e7, "1M<n<10M"),
    (1e8, "10M<n<100M"),
    (1e9, "100M<n<1B"),
    (1e10, "1B<n<10B"),
    (1e11, "10B<n<100B"),
    (1e12, "100B<n<1T"),
)
_TASKS = {"image": "image-classification", "text": "text-classification"}


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` value for ``n`` records."""
    for bound, name in _SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1T"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class VersionFolder:
    """A version folder read for the card: its ``version.json``, tables and audit report."""

    path: Path
    info: dict[str, Any]
    manifest: pa.Table
    plan: pa.Table | None = None
    report: dict[str, Any] | None = None
    findings: pa.Table | None = None
    #: SHA-256 of each file the card and Croissant refer to, by path relative to ``path``.
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The version id (``version.json``'s, else the folder name)."""
        return str(self.info.get("id") or self.path.name)

    @property
    def name(self) -> str:
        """A human name: ``version.json``'s ``name``, else the source folder or file name."""
        name = self.info.get("name")
        if name:
            return str(name)
        source = str(self.info.get("source") or "").rstrip("/\\")
        return Path(source).name or self.id

    @property
    def modality(self) -> str:
        """``text``, ``image`` or ``none``: as ``version.json`` or the audit's report records it."""
        for meta in (self.info, self.report or {}):
            found = (meta.get("input") or {}).get("modality")
            if found:
                return str(found)
        return "none"

    def has(self, name: str) -> bool:
        """Whether the manifest has column ``name`` with at least one value (it always has the
        contract's columns, all null where the data had nothing for them)."""
        if name not in self.manifest.column_names:
            return False
        return bool(self.manifest.column(name).null_count < self.manifest.num_rows)

    def value_counts(self, name: str) -> Counter[str]:
        """Records per value of a manifest column (``(missing)`` for null and empty), computed in Arrow
        so a manifest of millions of rows is never turned into Python objects."""
        if name not in self._value_counts:
            counts: Counter[str] = Counter()
            if name in self.manifest.column_names:
                for value, n in _arrow_counts(self.manifest.column(name)):
                    counts[MISSING if value is None or value == "" else str(value)] += n
            self._value_counts[name] = counts
        return self._value_counts[name]

    def present_values(self, name: str) -> Counter[str]:
        """``value_counts`` without the missing values."""
        counts = Counter(self.value_counts(name))
        counts.pop(MISSING, None)
        return counts

    def crosstab(self, rows: str, cols: str) -> dict[str, Counter[str]]:
        """Records per value of ``cols`` within each value of ``rows`` (``{row: {col: n}}``)."""
        grouped = self.manifest.group_by([rows, cols]).aggregate([([], "count_all")]).to_pylist()
        out: dict[str, Counter[str]] = {}
        for g in grouped:
            r = MISSING if g[rows] in (None, "") else str(g[rows])
            c = MISSING if g[cols] in (None, "") else str(g[cols])
            out.setdefault(r, Counter())[c] += int(g["count_all"])
        return out

    @cached_property
    def _value_counts(self) -> dict[str, Counter[str]]:
        return {}

    @cached_property
    def plan_rows(self) -> list[dict[str, Any]]:
        """The plan's (record_id, action, check) rows; empty without ``plan.parquet``."""
        if self.plan is None:
            return []
        cols = [c for c in ("record_id", "action", "check") if c in self.plan.column_names]
        rows: list[dict[str, Any]] = self.plan.select(cols).to_pylist()
        return rows

    @cached_property
    def plan_counts(self) -> dict[str, dict[str, int]]:
        """Records per action and check: from ``plan.parquet``, else ``version.json``'s plan summary."""
        if self.plan_rows:
            out: dict[str, Counter[str]] = {}
            for r in self.plan_rows:
                out.setdefault(str(r.get("action")), Counter())[str(r.get("check") or "(none)")] += 1
            return {a: dict(c.most_common()) for a, c in sorted(out.items())}
        summary = self.info.get("plan_summary")
        if not isinstance(summary, Mapping):
            return {}
        return {
            str(a): {str(k): int(v) for k, v in c.items() if isinstance(v, int | float)}
            for a, c in summary.items()
            if isinstance(c, Mapping)
        }

    @cached_property
    def licences(self) -> dict[str, Any] | None:
        """The licence summary of the manifest's ``licence`` column (None when it has none)."""
        name = "licence" if "licence" in self.manifest.column_names else "license"
        if not self.has(name):
            return None  # the manifest always has the column; all null means no licence metadata
        counts = self.value_counts(name)
        return summarise_licences({None if k == MISSING else k: n for k, n in counts.items()})

    @cached_property
    def sources(self) -> dict[str, Any] | None:
        """Summary of the records' own provenance values (None when no record names one: the
        manifest falls back to the data path for records without a source, which says nothing)."""
        if not self.has("source"):
            return None
        summary = summarise_sources(self.manifest.column("source"), exclude=self.info.get("source"))
        return summary if summary["records_with_source"] else None

    def ancestry(self) -> list[str]:
        """Ids of this version and its ancestors found beside it, newest first."""
        chain = [self.id]
        parent = self.info.get("parent")
        while parent and str(parent) not in chain:
            chain.append(str(parent))
            meta = self.path.parent / str(parent) / "version.json"
            try:
                parent = json.loads(meta.read_text(encoding="utf-8")).get("parent")
            except (OSError, ValueError):
                break
        return chain


def _arrow_counts(col: pa.ChunkedArray | pa.Array) -> list[tuple[Any, int]]:
    """(value, records) per distinct value of ``col``, null included, counted in Arrow."""
    vc = pc.value_counts(col)
    return list(zip(vc.field("values").to_pylist(), map(int, vc.field("counts").to_pylist()), strict=True))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot be read as Parquet ({exc})") from exc


def load_version(version_dir: str | Path) -> VersionFolder:
    """Read a version folder; files listed in ``version.json`` are checked against their SHA-256.

    Raises InputError when the folder is not a version folder or a listed file has changed.
    """
    path = Path(version_dir)
    meta = path / "version.json"
    if not meta.is_file():
        raise InputError(
            f"{path}: not a curata version folder (no version.json); give a folder under .curata/versions/"
        )
    info = _read_json(meta)
    manifest_path = path / "manifest.parquet"
    if not manifest_path.is_file():
        raise InputError(f"{path}: the version has no manifest.parquet")
    listed = info.get("files") or {}
    hashes: dict[str, str] = {}
    for name, expected in listed.items() if isinstance(listed, Mapping) else ():
        file = path / str(name)
        if not file.is_file():
            continue  # listed files kept elsewhere (exports) are not the card's to check
        actual = sha256_file(file)
        if expected and str(expected).lower() != actual:
            raise InputError(
                f"{file}: its SHA-256 differs from the one version.json records; the version folder "
                "was changed after it was written, so the card would not describe it"
            )
        hashes[str(name)] = actual
    optional = {
        "plan": path / "plan.parquet",
        "report": path / "audit" / "report.json",
        "findings": path / "audit" / "findings.parquet",
    }
    for file in (manifest_path, *optional.values()):
        rel = file.relative_to(path).as_posix()
        if file.is_file() and rel not in hashes:
            hashes[rel] = sha256_file(file)
    return VersionFolder(
        path=path,
        info=info,
        manifest=_read_parquet(manifest_path),
        plan=_read_parquet(optional["plan"]) if optional["plan"].is_file() else None,
        report=_read_json(optional["report"]) if optional["report"].is_file() else None,
        findings=_read_parquet(optional["findings"]) if optional["findings"].is_file() else None,
        hashes=hashes,
    )


def _as_version(version: str | Path | VersionFolder) -> VersionFolder:
    return version if isinstance(version, VersionFolder) else load_version(version)


# --- what the card measures ------------------------------------------------------------------------


def _dropped(version: VersionFolder, checks: frozenset[str]) -> int:
    """Records the plan took out because of one of ``checks``."""
    if version.plan_rows:
        return len(
            {
                r.get("record_id")
                for r in version.plan_rows
                if r.get("action") in DROP_ACTIONS and r.get("check") in checks
            }
        )
    counts = version.plan_counts
    return sum(n for a, c in counts.items() if a in DROP_ACTIONS for k, n in c.items() if k in checks)


def _actioned(version: VersionFolder, action: str) -> int:
    return sum(version.plan_counts.get(action, {}).values())


def _finding_rows(version: VersionFolder, check: str) -> list[dict[str, Any]]:
    if version.findings is None or "check" not in version.findings.column_names:
        return []
    cols = [c for c in ("check", "record_id", "evidence") if c in version.findings.column_names]
    return [r for r in version.findings.select(cols).to_pylist() if r["check"] == check]


def _check_status(version: VersionFolder, check: str) -> dict[str, Any] | None:
    checks = (version.report or {}).get("checks") or {}
    status = checks.get(check)
    return status if isinstance(status, dict) else None


def pii_summary(version: VersionFolder) -> dict[str, Any]:
    """What the audit's ``pii`` check found (per kind, where its evidence names one) and what the
    plan redacted or dropped; ``checked`` is False when the check did not run."""
    status = _check_status(version, "pii")
    rows = _finding_rows(version, "pii")
    kinds: Counter[str] = Counter()
    for r in rows:
        try:
            evidence = json.loads(r.get("evidence") or "{}")
        except ValueError:
            evidence = {}
        kind = next((evidence[k] for k in ("kind", "type", "entity") if k in evidence), None)
        kinds["(unspecified)" if kind is None else str(kind)] += 1
    plan = version.plan_counts
    return {
        "checked": bool(status and status.get("status") == "ok") or bool(rows),
        "status": status,
        "findings": len(rows),
        "records": len({r["record_id"] for r in rows}),
        "by_kind": dict(kinds.most_common()),
        "redacted": sum(plan.get("redact", {}).values()),
        "dropped": sum(n for a, c in plan.items() if a in DROP_ACTIONS for k, n in c.items() if k == "pii"),
    }


def hf_licences(summary: dict[str, Any] | None) -> list[str]:
    """The card header's licence ids: HF forms of the SPDX ids found, ``other`` for the rest."""
    if not summary or not summary["spdx_ids"]:
        return ["unknown"]
    return sorted({hf_licence_id(k) for k in summary["spdx_ids"]})


def languages(version: VersionFolder) -> list[str]:
    """Language codes recorded by the version or the audit (empty when curata does not know them)."""
    stats = (version.report or {}).get("statistics") or {}
    for source in (version.info, stats):
        found = source.get("languages") or source.get("language")
        if isinstance(found, str):
            return [found]
        if isinstance(found, Mapping):
            return [str(k) for k in found]
        if isinstance(found, list):
            return [str(k) for k in found]
    return []


# --- rendering -------------------------------------------------------------------------------------


def _md(value: object) -> str:
    """A value made safe for a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _count_table(header: str, counts: Counter[str] | Mapping[str, int], total: int) -> str:
    items = list(Counter(counts).most_common())
    rows: list[list[object]] = [
        [k, n, f"{100.0 * n / total:.1f}%" if total else "-"] for k, n in items[:MAX_TABLE_ROWS]
    ]
    rest = items[MAX_TABLE_ROWS:]
    if rest:
        n_rest = sum(n for _, n in rest)
        rows.append([f"({len(rest)} more)", n_rest, f"{100.0 * n_rest / total:.1f}%" if total else "-"])
    return _table([header, "records", "share"], rows)


def _yaml_block(value: object) -> str:
    import yaml

    text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False).strip()
    return f"```yaml\n{text}\n```"


def card_header(version: VersionFolder) -> dict[str, Any]:
    """The card's YAML header (Hugging Face dataset-card metadata)."""
    summary = version.licences
    ids = hf_licences(summary)
    header: dict[str, Any] = {"license": ids[0] if len(ids) == 1 else ids}
    if "other" in ids and summary:
        others = [k for k in summary["spdx_ids"] if hf_licence_id(k) == "other"]
        header["license_name"] = ", ".join(k.lower() for k in others)
    langs = languages(version)
    if langs:
        header["language"] = langs
    if len(version.present_values("label")) >= 2:
        header["task_categories"] = [_TASKS.get(version.modality, "tabular-classification")]
    header["size_categories"] = [size_category(version.manifest.num_rows)]
    header["pretty_name"] = version.name
    header["tags"] = ["curata"]
    return header


def _summary_section(version: VersionFolder) -> list[str]:
    n = version.manifest.num_rows
    kind = {"text": "text", "image": "image"}.get(version.modality, "tabular")
    labels = version.present_values("label")
    splits = version.present_values("split")
    facts = f"{n:,} {kind} records"
    if labels:
        facts += f" in {len(labels)} classes"
    if splits:
        plural = "s" if len(splits) != 1 else ""
        facts += f" over {len(splits)} split{plural} ({', '.join(sorted(map(str, splits)))})"
    source = version.info.get("source")
    lines = [
        "## Dataset summary",
        "",
        f"{facts}. This card describes version `{version.id}`, made by curata "
        f"{version.info.get('curata_version', '?')} on {version.info.get('created_at', '?')}"
        + (f" from `{source}`." if source else "."),
        "",
        "**Motivation** (why the dataset was created, by whom, who funded it): " + TO_COMPLETE,
        "",
    ]
    return lines


def _composition_section(version: VersionFolder) -> list[str]:
    n = version.manifest.num_rows
    lines = [
        "## Composition",
        "",
        f"The version holds {n:,} records (one row each in `manifest.parquet`).",
        "",
    ]
    has_splits, has_labels = version.has("split"), version.has("label")
    if has_splits:
        lines += ["### Records per split", "", _count_table("split", version.value_counts("split"), n), ""]
    if has_labels:
        lines += ["### Records per label", "", _count_table("label", version.value_counts("label"), n), ""]
    if has_splits and has_labels:
        by = version.crosstab("split", "label")
        top = [k for k, _ in version.value_counts("label").most_common(MAX_TABLE_ROWS)]
        names = sorted(by)
        rows: list[list[object]] = [[lab, *[by[s].get(lab, 0) for s in names]] for lab in top]
        lines += ["### Labels per split", "", _table(["label", *names], rows), ""]
    rows2: list[list[object]] = [
        ["duplicates removed", _dropped(version, DUPLICATE_CHECKS)],
        ["split leakage removed", _dropped(version, LEAKAGE_CHECKS)],
        ["benchmark contamination removed", _dropped(version, frozenset({"contamination"}))],
        ["relabelled", _actioned(version, "relabel")],
    ]
    pii = pii_summary(version)
    rows2.append(["PII found (findings in records)", f"{pii['findings']} in {pii['records']}"])
    rows2.append(["PII redacted", pii["redacted"]])
    lic = version.licences
    if lic is not None:
        rows2.append(["records with a missing licence", lic["missing"]])
        rows2.append(["records with an unrecognised licence", lic["unknown"]])
    if version.has("changed"):
        changed = pc.sum(pc.cast(version.manifest.column("changed"), pa.int64())).as_py() or 0
        rows2.append(["records changed from the source", changed])
    lines += ["### What curation removed and changed", "", _table(["", "records"], rows2), ""]
    lines += [
        "**What one record represents, and whether the dataset is a sample of a larger set:** " + TO_COMPLETE,
        "",
    ]
    return lines


def origin_groups(version: VersionFolder) -> Counter[str]:
    """Records per file their origin points into (``file#row`` -> ``file``; an image path -> its folder)."""
    if not version.has("origin"):
        return Counter()
    col = version.manifest.column("origin")
    in_file = pc.replace_substring_regex(col, r"#[^#]*$", "")
    folder = pc.replace_substring_regex(col, r"(^|/)[^/]*$", "")
    groups = pc.if_else(pc.match_substring(col, "#"), in_file, folder)
    out: Counter[str] = Counter()
    for value, n in _arrow_counts(groups):
        if value is not None:
            out[str(value) or "(top folder)"] += n
    return out


def _provenance_section(version: VersionFolder) -> list[str]:
    lines = ["## Collection and provenance", ""]
    n = version.manifest.num_rows
    source = version.info.get("source")
    if source:
        lines += [f"Records were read from `{source}`.", ""]
    s = version.sources
    if s is not None:
        lines += [
            f"{s['records_with_source']:,} of {n:,} records name their source ({s['distinct']:,} distinct).",
            "",
        ]
        if s.get("hosts"):
            lines += [_count_table("host", s["hosts"], s["records_with_source"]), ""]
        else:
            lines += [_count_table("source", s["top"], s["records_with_source"]), ""]
    groups = origin_groups(version)
    if groups:
        lines += ["### Records by origin", "", _count_table("origin", groups, n), ""]
    lines += ["**How, when and by whom the data was collected; consent obtained:** " + TO_COMPLETE, ""]
    return lines


def _preprocessing_section(version: VersionFolder) -> list[str]:
    lines = ["## Preprocessing and cleaning", ""]
    policy = version.info.get("policy")
    if policy:
        lines += ["The curation policy applied:", "", _yaml_block(policy), ""]
    else:
        lines += ["No curation policy is recorded for this version.", ""]
    counts = version.plan_counts
    if counts:
        rows: list[list[object]] = [
            [action, check, n] for action, by_check in counts.items() for check, n in by_check.items()
        ]
        lines += ["Records per action of the plan, by the check that led to it:", ""]
        lines += [_table(["action", "check", "records"], rows), ""]
    else:
        lines += ["The plan changed no record.", ""]
    checks = (version.report or {}).get("checks") or {}
    if checks:
        rows2: list[list[object]] = [
            [name, s.get("status", "?"), s.get("count", 0), s.get("reason") or s.get("error") or ""]
            for name, s in checks.items()
            if isinstance(s, dict)
        ]
        lines += ["The audit the plan came from ran these checks:", ""]
        lines += [_table(["check", "status", "findings", "note"], rows2), ""]
    lines += ["**Labelling process (who labelled, with what instructions and tools):** " + TO_COMPLETE, ""]
    return lines


def _pii_section(version: VersionFolder) -> list[str]:
    pii = pii_summary(version)
    lines = ["## Personal and sensitive information", ""]
    if not pii["checked"]:
        status = pii["status"]
        why = f" ({status.get('reason')})" if status and status.get("reason") else ""
        lines += [f"curata's `pii` check did not run on this data{why}. " + TO_COMPLETE, ""]
        return lines
    lines += [
        f"The audit found {pii['findings']:,} personal-data findings in {pii['records']:,} records; "
        f"the plan redacted {pii['redacted']:,} and dropped {pii['dropped']:,}.",
        "",
    ]
    if pii["by_kind"]:
        lines += [_table(["kind", "findings"], [[k, n] for k, n in pii["by_kind"].items()]), ""]
    lines += [
        "Automatic detection misses some personal data. **Other sensitive content (health, beliefs, "
        "minors) and whether people in the data consented:** " + TO_COMPLETE,
        "",
    ]
    return lines


def _licence_section(version: VersionFolder) -> list[str]:
    lines = ["## Licences and obligations", ""]
    summary = version.licences
    if summary is None:
        return [*lines, "The records carry no licence column. **Licence of the dataset:** " + TO_COMPLETE, ""]
    n = summary["records"]
    rows: list[list[object]] = []
    for label, count in list(summary["licences"].items())[:MAX_TABLE_ROWS]:
        if label not in summary["obligations"]:
            shown = "-"  # missing or unrecognised licence
        else:
            obligations = summary["obligations"][label]
            shown = "unknown" if obligations is None else ", ".join(obligations) or "none"
        rows.append([label, count, f"{100.0 * count / n:.1f}%" if n else "-", shown])
    lines += [_table(["licence", "records", "share", "obligations"], rows), ""]
    combined = summary["dataset_obligations"]
    lines += [
        "Using the whole dataset means honouring every obligation above: "
        + (", ".join(combined) if combined else "none that curata knows of")
        + ". Where a record offers a choice (`OR`), the least restrictive alternative is counted.",
        "",
    ]
    by = summary["records_by_obligation"]
    if by:
        lines += [_table(["obligation", "records"], [[o, by[o]] for o in OBLIGATIONS if o in by]), ""]
    if summary["missing"] or summary["unknown"]:
        lines += [
            f"{summary['missing']:,} records state no licence and {summary['unknown']:,} state one curata "
            "does not recognise; check them before redistributing.",
            "",
        ]
    if summary["unknown_obligations"]:
        lines += [f"curata has no terms on file for: {', '.join(summary['unknown_obligations'])}.", ""]
    lines += ["This summary reads licence metadata; it is not legal advice.", ""]
    return lines


def unhandled_findings(version: VersionFolder) -> dict[str, int]:
    """Per check, records with audit findings that no plan action (drop, relabel, redact, flag) touched.

    Counted per record, so a duplicate dropped as split leakage is not reported as left alone.
    Without the audit's findings table, checks with findings but no plan row are counted whole.
    """
    touched = {r.get("record_id") for r in version.plan_rows}
    findings = version.findings
    if findings is not None and {"check", "record_id"} <= set(findings.column_names):
        left: dict[str, set[str]] = {}
        for r in findings.select(["check", "record_id"]).to_pylist():
            if r["record_id"] not in touched:
                left.setdefault(str(r["check"]), set()).add(str(r["record_id"]))
        return {c: len(ids) for c, ids in sorted(left.items(), key=lambda kv: -len(kv[1]))}
    acted = {c for by in version.plan_counts.values() for c in by}
    checks = (version.report or {}).get("checks") or {}
    return {
        name: int(s["count"])
        for name, s in checks.items()
        if isinstance(s, dict) and s.get("count") and name not in acted
    }


def _limitations_section(version: VersionFolder) -> list[str]:
    lines = ["## Known limitations and biases", ""]
    facts: list[str] = []
    if version.has("label"):
        counts = version.present_values("label")
        missing = version.value_counts("label").get(MISSING, 0)
        if counts:
            most, least = counts.most_common()[0], counts.most_common()[-1]
            facts.append(
                f"Class balance: the largest class ({most[0]}, {most[1]:,}) is "
                f"{most[1] / max(least[1], 1):.1f} times the smallest ({least[0]}, {least[1]:,})."
            )
        if missing:
            facts.append(f"{missing:,} records have no label.")
    flagged = version.plan_counts.get("flag", {})
    if flagged:
        kept = ", ".join(f"{c} ({n:,})" for c, n in flagged.items())
        facts.append(f"Records flagged for review but kept: {kept}.")
    left = unhandled_findings(version)
    if left:
        shown = ", ".join(f"{c} ({n:,} records)" for c, n in left.items())
        facts.append(f"Records with audit findings the plan left untouched: {shown}.")
    lines += [f"- {f}" for f in facts] + ([""] if facts else [])
    lines += ["**Other known biases, gaps and uses to avoid:** " + TO_COMPLETE, ""]
    return lines


def _audit_section(version: VersionFolder, log_head: str | None) -> list[str]:
    rows: list[list[object]] = [
        ["version", f"`{version.id}`"],
        ["parent", f"`{version.info['parent']}`" if version.info.get("parent") else "(none: first version)"],
        ["created", version.info.get("created_at", "?")],
        ["curata", version.info.get("curata_version", "?")],
        ["audit-log head", f"`{log_head}`" if log_head else "(not given)"],
    ]
    if version.info.get("findings_digest"):
        rows.append(["findings digest", f"`{version.info['findings_digest']}`"])
    lines = ["## Audit trail", "", _table(["", ""], rows), ""]
    if version.hashes:
        lines += ["SHA-256 of the version's files:", ""]
        lines += [_table(["file", "sha256"], [[k, f"`{v}`"] for k, v in sorted(version.hashes.items())]), ""]
    lines += [
        "The audit-log head is the hash of the newest entry of curata's hash-chained audit log: it "
        "commits to this version and to every curation step before it.",
        "",
    ]
    return lines


def render_card(version: str | Path | VersionFolder, log_head: str | None = None) -> str:
    """The dataset card (``README.md`` text) for a version folder."""
    import yaml

    v = _as_version(version)
    header = yaml.safe_dump(card_header(v), sort_keys=False, allow_unicode=True).strip()
    body: list[str] = [f"# {v.name}", ""]
    body += _summary_section(v)
    body += _composition_section(v)
    body += _provenance_section(v)
    body += _preprocessing_section(v)
    body += _pii_section(v)
    body += _licence_section(v)
    body += ["## Uses", "", "**Intended uses, and uses to avoid:** " + TO_COMPLETE, ""]
    body += _limitations_section(v)
    body += [
        "## Distribution and maintenance",
        "",
        "**Who maintains the dataset, how to report problems, how it will be updated:** " + TO_COMPLETE,
        "",
    ]
    body += _audit_section(v, log_head)
    return f"---\n{header}\n---\n\n" + "\n".join(body).rstrip() + "\n"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file: give a folder for the card")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in CARD_FILES)
        if foreign:
            raise InputError(
                f"--out {out_dir} already holds other files ({', '.join(foreign[:3])}): choose an empty "
                "or new folder (curata only replaces the README.md and croissant.json it wrote)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)


def write_card(version_dir: str | Path, out_dir: str | Path, log_head: str | None = None) -> list[Path]:
    """Write ``README.md`` (the dataset card) and ``croissant.json`` for a version into ``out_dir``.

    ``out_dir`` must be empty or hold only those two files (which are replaced). Both are built
    before either is written, and each is written atomically.
    """
    from curata.report.croissant import croissant_metadata

    version = load_version(version_dir)
    out = Path(out_dir)
    _prepare_out(out)
    card = render_card(version, log_head)
    croissant = croissant_metadata(version, out, log_head)
    paths = [out / "README.md", out / "croissant.json"]
    _atomic_write(paths[0], card)
    _atomic_write(paths[1], json.dumps(croissant, indent=2, ensure_ascii=False) + "\n")
    return paths
