"""Tests for the dataset card (README.md) and Croissant metadata written from a version folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curata.errors import InputError
from curata.report.card import TO_COMPLETE, load_version, render_card, size_category, write_card
from curata.report.croissant import CONFORMS_TO, croissant_metadata

LOG_HEAD = "ab" * 32


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_version(
    root: Path,
    *,
    vid: str = "v0002",
    parent: str | None = "v0001",
    licences: list[Any] | None = None,
    modality: str = "text",
    n: int = 12,
    with_pii: bool = True,
) -> Path:
    """A version folder following the version-store contract, with ``n`` records."""
    vdir = root / ".curata" / "versions" / vid
    (vdir / "audit").mkdir(parents=True)
    labels = ["pos" if i % 3 else "neg" for i in range(n)]
    splits = ["train" if i < n * 3 // 4 else "test" for i in range(n)]
    if licences is None:
        licences = ["MIT"] * (n - 3) + ["CC BY-SA 4.0", None, "mystery licence"]
    manifest = pa.table(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "content_hash": [f"{i:032x}" for i in range(n)],
            "split": splits,
            "label": labels,
            "licence": licences,
            "source": [f"https://example.org/page/{i % 4}" for i in range(n)],
            "origin": ["data.parquet"] * n,
            "changed": [i == 1 for i in range(n)],
        }
    )
    pq.write_table(manifest, vdir / "manifest.parquet")
    plan = pa.table(
        {
            "record_id": ["d1", "d2", "d3", "r1", "r2"],
            "action": ["drop", "drop", "drop", "relabel", "redact"],
            "check": ["exact_duplicate", "near_duplicate", "split_leakage", "label_issue", "pii"],
            "score": [1.0, 0.9, 1.0, 0.8, 1.0],
            "reason": ["dup", "dup", "leak", "label", "email"],
            "old_label": [None, None, None, "neg", None],
            "new_label": [None, None, None, "pos", None],
        }
    )
    pq.write_table(plan, vdir / "plan.parquet")
    findings = pa.table(
        {
            "check": ["pii", "pii", "exact_duplicate", "outlier"],
            "record_id": ["r2", "r2", "d1", "r5"],
            "related_id": [None, None, "r0", None],
            "group_id": [None, None, None, None],
            "score": [1.0, 0.9, 1.0, 0.5],
            "severity": ["warning", "warning", "warning", "info"],
            "message": ["email", "phone", "dup", "odd"],
            "evidence": ['{"kind": "email"}', '{"kind": "phone"}', None, None],
        }
    )
    if with_pii:
        pq.write_table(findings, vdir / "audit" / "findings.parquet")
    checks: dict[str, Any] = {
        "exact_duplicate": {"status": "ok", "count": 1, "reason": None},
        "outlier": {"status": "ok", "count": 1, "reason": None},
        "pii": (
            {"status": "ok", "count": 2, "reason": None}
            if with_pii
            else {"status": "skipped", "count": 0, "reason": "not selected"}
        ),
    }
    report = {
        "curata_version": "0.1.0",
        "input": {"path": "data.parquet", "modality": modality, "num_rows": n + 3},
        "roles": {"id": "id", "text": "text", "label": "label", "split": "split", "license": "licence"},
        "checks": checks,
        "statistics": {"num_rows": n + 3},
    }
    (vdir / "audit" / "report.json").write_text(json.dumps(report), encoding="utf-8")
    files = {
        name: _sha(vdir / name)
        for name in ("manifest.parquet", "plan.parquet", "audit/report.json", "audit/findings.parquet")
        if (vdir / name).exists()
    }
    info = {
        "id": vid,
        "parent": parent,
        "created_at": "2026-01-02T03:04:05Z",
        "curata_version": "0.1.0",
        "source": str(root / "my-corpus"),
        "policy": {"drop": ["exact_duplicate", "near_duplicate", "split_leakage"], "redact": ["pii"]},
        "plan_summary": {"drop": {"exact_duplicate": 1, "near_duplicate": 1, "split_leakage": 1}},
        "findings_digest": "cd" * 32,
        "counts": {"records": n},
        "files": files,
    }
    (vdir / "version.json").write_text(json.dumps(info), encoding="utf-8")
    return vdir


def split_card(text: str) -> tuple[dict[str, Any], str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    header = yaml.safe_load(head)
    assert isinstance(header, dict)
    return header, body


def test_size_categories() -> None:
    assert size_category(0) == "n<1K"
    assert size_category(999) == "n<1K"
    assert size_category(1000) == "1K<n<10K"
    assert size_category(123_456) == "100K<n<1M"
    assert size_category(10**13) == "n>1T"


def test_card_header_and_sections(tmp_path: Path) -> None:
    vdir = make_version(tmp_path)
    header, body = split_card(render_card(vdir, LOG_HEAD))
    assert header["license"] == ["cc-by-sa-4.0", "mit"]
    assert header["task_categories"] == ["text-classification"]
    assert header["size_categories"] == ["n<1K"]
    assert "language" not in header  # curata does not know it
    assert header["pretty_name"] == "my-corpus"
    for section in (
        "## Dataset summary",
        "## Composition",
        "## Collection and provenance",
        "## Preprocessing and cleaning",
        "## Personal and sensitive information",
        "## Licences and obligations",
        "## Known limitations and biases",
        "## Audit trail",
        "## Uses",
    ):
        assert section in body
    # Sections curata cannot know are marked for a human.
    assert body.count(TO_COMPLETE) >= 6
    uses = body.split("## Uses", 1)[1].split("##", 1)[0]
    assert TO_COMPLETE in uses
    # Measured facts.
    assert "| train | 9 |" in body and "| test | 3 |" in body
    assert "| duplicates removed | 2 |" in body
    assert "| split leakage removed | 1 |" in body
    assert "| relabelled | 1 |" in body
    assert "| PII redacted | 1 |" in body
    assert "| email | 1 |" in body and "| phone | 1 |" in body
    assert "| MIT | 9 |" in body and "attribution, share-alike" in body
    assert "1 records state no licence and 1 state one curata does not recognise" in body
    assert LOG_HEAD in body and "`v0002`" in body and "`v0001`" in body
    assert "exact_duplicate: 1" not in body  # the plan table, not version.json's summary, is used
    assert "| drop | exact_duplicate | 1 |" in body
    assert "example.org" in body
    # Audit findings the plan left alone (the duplicate "d1" was dropped, so it is not among them).
    assert "findings the plan left untouched: outlier (1 records)." in body


def test_card_variants(tmp_path: Path) -> None:
    vdir = make_version(tmp_path / "a", licences=["public domain"] * 12, modality="image", with_pii=False)
    header, body = split_card(render_card(vdir))
    assert header["license"] == "other"
    assert header["license_name"] == "licenseref-public-domain"
    assert header["task_categories"] == ["image-classification"]
    assert "`pii` check did not run" in body
    assert "(not given)" in body  # no audit-log head

    vdir = make_version(tmp_path / "b", licences=[None] * 12, modality="none")
    header, _ = split_card(render_card(vdir))
    assert header["license"] == "unknown"
    assert header["task_categories"] == ["tabular-classification"]


def test_write_card_refuses_foreign_files_and_overwrites_its_own(tmp_path: Path) -> None:
    vdir = make_version(tmp_path)
    out = tmp_path / "card"
    paths = write_card(vdir, out, LOG_HEAD)
    assert [p.name for p in paths] == ["README.md", "croissant.json"]
    assert all(p.is_file() for p in paths)
    write_card(vdir, out, None)  # its own files are replaced
    assert "(not given)" in (out / "README.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "croissant.json"]
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match=r"notes\.txt"):
        write_card(vdir, out)


def test_version_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a curata version folder"):
        load_version(tmp_path)
    vdir = make_version(tmp_path)
    pq.write_table(pa.table({"record_id": ["x"]}), vdir / "manifest.parquet")
    with pytest.raises(InputError, match="SHA-256"):
        load_version(vdir)


def test_croissant_structure(tmp_path: Path) -> None:
    vdir = make_version(tmp_path)
    doc = croissant_metadata(vdir, tmp_path / "card", LOG_HEAD)
    assert doc["conformsTo"] == CONFORMS_TO
    assert doc["@type"] == "sc:Dataset"
    assert doc["version"] == "2.0.0+v0002"  # the parent folder is absent: two versions in the chain
    assert doc["license"] == [
        "https://spdx.org/licenses/CC-BY-SA-4.0.html",
        "https://spdx.org/licenses/MIT.html",
    ]
    files = {d["@id"]: d for d in doc["distribution"]}
    assert files["manifest.parquet"]["sha256"] == _sha(vdir / "manifest.parquet")
    assert files["manifest.parquet"]["contentUrl"] == "../.curata/versions/v0002/manifest.parquet"
    records = next(r for r in doc["recordSet"] if r["@id"] == "records")
    names = [f["name"] for f in records["field"]]
    assert names[:5] == ["record_id", "content_hash", "split", "label", "licence"]
    assert records["key"] == {"@id": "records/record_id"}
    changed = next(f for f in records["field"] if f["name"] == "changed")
    assert changed["dataType"] == "sc:Boolean"
    assert any(LOG_HEAD in step for step in doc["rai:dataPreprocessingProtocol"])
    assert "2 findings in 1 records" in doc["rai:personalSensitiveInformation"][0]
    assert doc["rai:dataBiases"]
    assert "my-corpus" in doc["rai:dataCollection"]


def test_croissant_validates_with_mlcroissant(tmp_path: Path) -> None:
    mlc = pytest.importorskip("mlcroissant")
    vdir = make_version(tmp_path)
    _, croissant = write_card(vdir, tmp_path / "card", LOG_HEAD)
    dataset = mlc.Dataset(jsonld=croissant)
    issues = dataset.metadata.ctx.issues
    assert not issues.errors, issues.report()
    assert not issues.warnings, issues.report()
    assert dataset.metadata.personal_sensitive_information
    # The manifest's records load through the Croissant description.
    rows = list(dataset.records("records"))
    assert len(rows) == 12
    assert rows[0]["records/record_id"] == b"r0"


def test_origin_groups_and_missing_values(tmp_path: Path) -> None:
    from curata.report.card import VersionFolder, origin_groups

    manifest = pa.table(
        {
            "record_id": ["a", "b", "c", "d", "e"],
            "split": ["train", None, "", "train", "test"],
            "label": [None] * 5,
            "origin": ["data/part-0.parquet#0", "data/part-0.parquet#1", "cat/1.png", "top.png", None],
        }
    )
    version = VersionFolder(path=tmp_path, info={"id": "v1"}, manifest=manifest)
    assert origin_groups(version) == {"data/part-0.parquet": 2, "cat": 1, "(top folder)": 1}
    assert version.value_counts("split") == {"train": 2, "(missing)": 2, "test": 1}
    assert not version.has("label") and version.has("split")
    header, body = split_card(render_card(version))
    assert "task_categories" not in header  # no labels: no classification task
    assert header["license"] == "unknown"
    assert "Records per label" not in body
