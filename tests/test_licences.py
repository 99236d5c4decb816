"""Tests for licence parsing, obligations, the licence policy, the ``licence`` check and role detection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curata.checks.base import Context
from curata.checks.licence import LicenceCheck, licence_summary
from curata.errors import ConfigError, InputError
from curata.io import read_dataset
from curata.io.roles import detect_roles
from curata.licences import (
    PUBLIC_DOMAIN,
    LicenceSettings,
    hf_licence_id,
    licence_obligations,
    normalise_licence_id,
    parse_licence,
    summarise_licences,
)

CHECK_FINDINGS = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"


# --- parsing and normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MIT", "MIT"),
        ("mit", "MIT"),
        ("MIT License", "MIT"),
        ("The MIT License", "MIT"),
        ("Apache 2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("apache2", "Apache-2.0"),
        ("CC BY 4.0", "CC-BY-4.0"),
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
        ("CC BY-NC-SA 4.0", "CC-BY-NC-SA-4.0"),
        ("Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International", "CC-BY-NC-SA-4.0"),
        ("CC0", "CC0-1.0"),
        ("public domain", PUBLIC_DOMAIN),
        ("Public-Domain", PUBLIC_DOMAIN),
        ("GPLv3", "GPL-3.0-only"),
        ("GPL-3.0", "GPL-3.0-only"),
        ("GNU GPL v3 or later", "GPL-3.0-or-later"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("LGPL v2.1", "LGPL-2.1-only"),
        ("BSD 3-Clause", "BSD-3-Clause"),
        ("ODbL", "ODbL-1.0"),
        ("Mozilla Public License 2.0", "MPL-2.0"),
        ("apache-2.0 and mit", "Apache-2.0 AND MIT"),
        ("MIT or Apache 2.0", "MIT OR Apache-2.0"),
        ("GPL-2.0-only WITH Classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
    ],
)
def test_normalisation(raw: str, expected: str) -> None:
    parsed = parse_licence(raw)
    assert parsed.status == "ok", parsed.problem
    assert parsed.expression == expected
    assert parsed.label == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "unknown", "N/A", "NOASSERTION", float("nan")])
def test_missing(raw: object) -> None:
    parsed = parse_licence(raw)
    assert parsed.status == "missing"
    assert parsed.label == "(missing)"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("mystery licence", "unknown licence id"),
        ("other", "unknown licence id: other"),
        ("CC BY", "unknown licence id"),  # no version: ambiguous
        ("LicenseRef-inhouse", "unknown licence id: LicenseRef-inhouse"),
        ("MIT AND foo", "unknown licence id: foo"),
        ("(MIT", "not a valid SPDX licence expression"),
    ],
)
def test_unknown(raw: str, problem: str) -> None:
    parsed = parse_licence(raw)
    assert parsed.status == "unknown"
    assert parsed.problem is not None and problem in parsed.problem
    assert parsed.label == raw


def test_obligations_table() -> None:
    assert licence_obligations("MIT") == ("attribution",)
    assert licence_obligations("CC0-1.0") == ()
    assert licence_obligations(PUBLIC_DOMAIN) == ()
    assert licence_obligations("CC-BY-SA-4.0") == ("attribution", "share-alike")
    assert licence_obligations("CC-BY-NC-ND-4.0") == ("attribution", "non-commercial", "no-derivatives")
    assert licence_obligations("CC-BY-NC-SA-3.0-DE") == ("attribution", "share-alike", "non-commercial")
    assert licence_obligations("GPL-3.0-or-later") == ("attribution", "copyleft")
    assert licence_obligations("ODbL-1.0") == ("attribution", "share-alike")
    assert licence_obligations("Artistic-2.0") is None  # recognised, terms not on file


def test_expression_obligations() -> None:
    # AND: every licence applies.
    both = parse_licence("MIT AND CC-BY-SA-4.0")
    assert both.obligations == ("attribution", "share-alike")
    assert both.obligations_known
    # OR: the least restrictive alternative.
    assert parse_licence("CC-BY-NC-4.0 OR MIT").obligations == ("attribution",)
    assert parse_licence("GPL-3.0-only OR CC0-1.0").obligations == ()
    # An alternative with unknown terms is never preferred; alone it makes the result unknown.
    assert parse_licence("Artistic-2.0 OR CC-BY-4.0").obligations == ("attribution",)
    unknown = parse_licence("Artistic-2.0 AND MIT")
    assert unknown.obligations == ("attribution",) and not unknown.obligations_known
    # WITH keeps the licence's obligations.
    assert parse_licence("GPL-2.0-only WITH Classpath-exception-2.0").obligations == (
        "attribution",
        "copyleft",
    )


def test_normalise_id_and_hf_ids() -> None:
    assert normalise_licence_id("apache 2.0") == "Apache-2.0"
    assert normalise_licence_id("LicenseRef-inhouse") == "LicenseRef-inhouse"
    assert normalise_licence_id("MIT OR Apache-2.0") is None
    assert normalise_licence_id("nonsense") is None
    assert hf_licence_id("MIT") == "mit"
    assert hf_licence_id("GPL-3.0-only") == "gpl-3.0"
    assert hf_licence_id("ODbL-1.0") == "odbl"
    assert hf_licence_id("CC-BY-NC-SA-4.0") == "cc-by-nc-sa-4.0"
    assert hf_licence_id("GPL-3.0-or-later") == "other"
    assert hf_licence_id(PUBLIC_DOMAIN) == "other"


# --- settings ------------------------------------------------------------------------------------


def test_settings_normalise_and_validate() -> None:
    s = LicenceSettings(allow=("mit", "Apache 2.0", "MIT"), deny=("CC BY-NC 4.0", "No-Derivatives"))
    assert s.allow == ("MIT", "Apache-2.0")
    assert s.deny == ("CC-BY-NC-4.0", "no-derivatives")
    assert LicenceSettings().allow is None and not LicenceSettings().has_policy
    assert LicenceSettings.from_value({"deny": ["GPL-3.0"]}).deny == ("GPL-3.0-only",)
    assert LicenceSettings.from_value(None) == LicenceSettings()
    assert LicenceSettings(allow=("LicenseRef-inhouse",)).allow == ("LicenseRef-inhouse",)


def test_settings_errors_name_the_culprits() -> None:
    with pytest.raises(ConfigError, match=r"'Foo-1\.0'.*'bogus'"):
        LicenceSettings(allow=("MIT", "Foo-1.0"), deny=("bogus",))
    with pytest.raises(ConfigError, match="MIT OR Apache"):
        LicenceSettings(deny=("MIT OR Apache-2.0",))
    with pytest.raises(ConfigError, match="both the allow and the deny list"):
        LicenceSettings(allow=("MIT",), deny=("mit",))
    with pytest.raises(ConfigError, match="must be a list"):
        LicenceSettings(deny="MIT")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown licence setting"):
        LicenceSettings.from_value({"allow": ["MIT"], "denied": ["GPL-3.0"]})


# --- the check -----------------------------------------------------------------------------------

LICENCE_ROWS: list[dict[str, Any]] = [
    {"id": "ok-mit", "text": "first text", "license": "MIT", "url": "https://a.org/1"},
    {"id": "ok-apache", "text": "second text", "license": "Apache 2.0", "url": "https://a.org/2"},
    {"id": "missing", "text": "third text", "license": None, "url": "https://b.org/3"},
    {"id": "empty", "text": "fourth text", "license": "", "url": None},
    {"id": "unknown", "text": "fifth text", "license": "mystery licence", "url": "https://b.org/5"},
    {"id": "nc", "text": "sixth text", "license": "CC BY-NC 4.0", "url": "https://b.org/6"},
    {"id": "gpl", "text": "seventh text", "license": "GPLv3", "url": "https://c.org/7"},
    {"id": "dual", "text": "eighth text", "license": "MIT OR CC-BY-NC-4.0", "url": "https://c.org/8"},
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_check(path: Path, settings: object = None) -> dict[str, dict[str, Any]]:
    ds = read_dataset(path)
    context = Context(dataset=ds, signals={}, settings={} if settings is None else {"licence": settings})
    check = LicenceCheck()
    assert check.applies(context) is None
    table = check.run(context)
    rows = table.to_pylist()
    assert all(r["check"] == "licence" and 0.0 <= r["score"] <= 1.0 for r in rows)
    return {r["record_id"]: {**r, "evidence": json.loads(r["evidence"])} for r in rows}


def test_check_without_policy_flags_missing_and_unknown(tmp_path: Path) -> None:
    found = run_check(write_rows(tmp_path / "d.parquet", LICENCE_ROWS))
    assert set(found) == {"missing", "empty", "unknown"}
    assert found["missing"]["severity"] == "warning"
    assert found["missing"]["evidence"]["reason"] == "missing"
    assert found["unknown"]["severity"] == "warning"
    assert found["unknown"]["evidence"] == {
        "licence": "mystery licence",
        "raw": "mystery licence",
        "reason": "unknown",
        "obligations": [],
    }
    assert "mystery licence" in found["unknown"]["message"]


def test_check_deny_list(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.parquet", LICENCE_ROWS)
    found = run_check(path, {"deny": ["CC-BY-NC-4.0", "copyleft"]})
    assert set(found) == {"missing", "empty", "unknown", "nc", "gpl"}  # "dual" may choose MIT
    assert found["nc"]["severity"] == "error" and found["nc"]["score"] == 1.0
    assert "CC-BY-NC-4.0" in found["nc"]["message"] and "deny" in found["nc"]["message"]
    assert found["nc"]["evidence"]["reason"] == "denied"
    assert found["nc"]["evidence"]["obligations"] == ["attribution", "non-commercial"]
    assert "copyleft" in found["gpl"]["message"]
    # An obligation in the deny list catches every licence carrying it.
    found = run_check(path, LicenceSettings(deny=("non-commercial",)))
    assert {"nc"} <= set(found) and "dual" not in found and "gpl" not in found


def test_check_allow_list(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.parquet", LICENCE_ROWS)
    found = run_check(path, LicenceSettings(allow=("MIT", "Apache-2.0")))
    assert set(found) == {"missing", "empty", "unknown", "nc", "gpl"}
    assert found["gpl"]["severity"] == "error"
    assert found["gpl"]["evidence"]["reason"] == "not_allowed"
    assert "GPL-3.0-only" in found["gpl"]["message"] and "allow list" in found["gpl"]["message"]
    # With an allow list an unrecognised licence cannot be on it: an error, not a warning.
    assert found["unknown"]["severity"] == "error"
    assert found["missing"]["severity"] == "warning"
    # A custom licence the allow list names is accepted; one it does not name is an error.
    rows = [{"id": "a", "licence": "LicenseRef-inhouse"}, {"id": "b", "licence": "LicenseRef-other"}]
    found = run_check(write_rows(tmp_path / "custom.parquet", rows), {"allow": ["LicenseRef-inhouse"]})
    assert set(found) == {"b"} and found["b"]["severity"] == "error"


def test_check_clean_data_has_no_findings(tmp_path: Path) -> None:
    rows = [
        {"id": str(i), "text": f"text {i}", "licence": lic} for i, lic in enumerate(["MIT", "cc-by-4.0"] * 3)
    ]
    assert run_check(write_rows(tmp_path / "d.parquet", rows), {"allow": ["MIT", "CC-BY-4.0"]}) == {}


def test_check_skipped_without_licence_column(tmp_path: Path) -> None:
    ds = read_dataset(write_rows(tmp_path / "d.parquet", [{"id": "1", "text": "hello there"}]))
    assert LicenceCheck().applies(Context(dataset=ds, signals={})) == "no licence column"


def test_licence_summary(tmp_path: Path) -> None:
    ds = read_dataset(write_rows(tmp_path / "d.parquet", LICENCE_ROWS))
    summary = licence_summary(ds)
    assert summary is not None
    assert summary["records"] == 8
    assert summary["missing"] == 2 and summary["unknown"] == 1
    assert summary["licences"]["MIT"] == 1
    assert summary["obligations"]["CC-BY-NC-4.0"] == ["attribution", "non-commercial"]
    assert summary["dataset_obligations"] == ["attribution", "copyleft", "non-commercial"]
    assert summary["records_by_obligation"]["attribution"] == 5
    assert summary["sources"]["records_with_source"] == 7
    assert summary["sources"]["hosts"] == {"b.org": 3, "a.org": 2, "c.org": 2}
    ds = read_dataset(write_rows(tmp_path / "e.parquet", [{"id": "1", "text": "hello there"}]))
    assert licence_summary(ds) is None
    assert summarise_licences(["Artistic-2.0"])["unknown_obligations"] == ["Artistic-2.0"]


# --- roles ---------------------------------------------------------------------------------------


def test_licence_and_source_roles_detected() -> None:
    for licence_name in ("license", "Licence", "license_id", "spdx"):
        for source_name in ("source", "url", "origin", "provenance"):
            table = pa.table(
                {
                    "text": ["a fairly long text about cats", "another long text about dogs"],
                    licence_name: ["MIT", "MIT"],
                    source_name: ["https://example.org/a-long-url/1", "https://example.org/a-long-url/2"],
                }
            )
            roles = detect_roles(table)
            assert roles["license"] == licence_name
            assert roles["source"] == source_name
            assert roles["text"] == "text"


def test_source_role_skips_prose_and_long_urls_are_not_text() -> None:
    # A translation pair's "source" holds sentences: content, not provenance.
    prose = pa.table({"source": ["the cat sat on the mat today", "a dog ran in the park all day"]})
    assert "source" not in detect_roles(prose)
    # A lone long URL column was once taken for the text; it is provenance.
    urls = pa.table(
        {"id": ["1", "2"], "url": ["https://example.org/some/long/path/1", "https://e.org/x/2/y/z"]}
    )
    roles = detect_roles(urls)
    assert roles["source"] == "url" and roles["text"] is None
    # Without such columns the metadata roles are absent.
    assert set(detect_roles(pa.table({"text": ["x"]}))) == {"id", "text", "image", "label", "split"}


def test_role_overrides(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "d.parquet",
        [{"id": "1", "text": "hello there", "rights": "MIT", "where": "web", "license": "x"}],
    )
    ds = read_dataset(path, license_column="rights", source_column="where")
    assert ds.roles.license == "rights" and ds.roles.source == "where"
    assert ds.roles.as_dict()["license"] == "rights"
    with pytest.raises(InputError, match="no column named 'nope' for the license role"):
        read_dataset(path, license_column="nope")


# --- the findings contract -----------------------------------------------------------------------


@pytest.mark.skipif(not CHECK_FINDINGS.exists(), reason="shared/tools/check_findings.py not present")
def test_audit_output_follows_findings_contract(tmp_path: Path) -> None:
    from curata import AuditSettings, audit

    path = write_rows(tmp_path / "d.parquet", LICENCE_ROWS)
    result = audit(path, tmp_path / "out", settings=AuditSettings(checks=("licence",)))
    assert result.report["checks"]["licence"]["count"] == 3
    assert result.report["roles"]["license"] == "license"
    done = subprocess.run(
        [sys.executable, str(CHECK_FINDINGS), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_audit_report_shows_the_licence_summary_and_policy_lists_reach_the_check(tmp_path: Path) -> None:
    from curata.audit import AuditSettings, audit

    path = write_rows(tmp_path / "d.parquet", LICENCE_ROWS)
    settings = AuditSettings(checks=("licence",), licence=LicenceSettings(deny=("non-commercial",)))
    result = audit(path, tmp_path / "out", settings=settings, workers=1)
    found = {r["record_id"]: r for r in result.findings.to_pylist()}
    assert found["nc"]["severity"] == "error"  # denied through AuditSettings, as a policy does
    stats = result.report["statistics"]["licences"]
    assert stats["records"] == 8 and stats["missing"] == 2
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="licences"' in html and "CC-BY-NC-4.0" in html and "non-commercial" in html
