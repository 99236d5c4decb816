"""Workspace and versions: layout, lock, atomic writes, manifest, redaction, diff and export."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curata.curate import curate
from curata.errors import InputError, WorkspaceError
from curata.signals.pipeline import content_hash
from curata.versions import Workspace, diff_versions, export_version, verify_workspace
from curata.versions.files import sha256_file

from conftest import random_text, write_parquet

FAST = """\
checks:
  exact_duplicate: drop
  split_leakage: drop
  pii: redact
  label_issue: {action: flag, enabled: false}
  outlier: {action: flag, enabled: false}
  semantic_duplicate: {action: flag, enabled: false}
  underrepresented: {action: flag, enabled: false}
"""
EMAIL_TEXT = "please write to alice.smith@example.com about the river forest mountain trip"


def small_rows() -> list[dict[str, object]]:
    rng = random.Random(11)
    rows: list[dict[str, object]] = [
        {
            "id": f"r{i:02d}",
            "text": random_text(rng),
            "label": "ab"[i % 2],
            "split": "test" if i % 4 == 0 else "train",
        }
        for i in range(12)
    ]
    rows[3]["text"] = EMAIL_TEXT
    rows.append({**rows[1], "id": "dup"})  # exact duplicate of r01 (train)
    return rows


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = write_parquet(tmp_path / "data.parquet", small_rows())
    policy = tmp_path / "curata.yaml"
    policy.write_text(FAST)
    return data, policy, tmp_path / ".curata"


def test_curate_writes_the_version_layout(project: tuple[Path, Path, Path]) -> None:
    data, policy, ws_dir = project
    source_bytes = data.read_bytes()
    result = curate(data, policy, ws_dir, workers=1)
    assert result.version == "v1" and result.parent is None
    vdir = ws_dir / "versions" / "v1"
    meta = json.loads((vdir / "version.json").read_text())
    for key in (
        "id",
        "parent",
        "created_at",
        "curata_version",
        "source",
        "policy",
        "plan_summary",
        "findings_digest",
        "counts",
        "files",
    ):
        assert key in meta, key
    assert meta["source"] == str(data.resolve())
    assert meta["plan_summary"]["drop"] == {"exact_duplicate": 1}
    assert meta["plan_summary"]["redact"] == {"pii": 1}
    assert meta["counts"]["records"] == 12 and meta["counts"]["per_split"] == {"test": 3, "train": 9}
    assert set(meta["files"]) == {
        "manifest.parquet",
        "plan.parquet",
        "changes/records.parquet",
        "audit/findings.parquet",
        "audit/report.json",
        "audit/report.html",
    }
    for name, digest in meta["files"].items():
        assert sha256_file(vdir / name) == digest
    manifest = pq.read_table(vdir / "manifest.parquet")
    assert manifest.column_names == [
        "record_id",
        "content_hash",
        "split",
        "label",
        "licence",
        "source",
        "origin",
        "changed",
    ]
    plan = pq.read_table(vdir / "plan.parquet")
    assert plan.column_names == ["record_id", "action", "check", "score", "reason", "old_label", "new_label"]
    by_id = {r["record_id"]: r for r in manifest.to_pylist()}
    assert "dup" not in by_id and "r01" in by_id
    assert by_id["r05"]["origin"] == "data.parquet#5" and by_id["r05"]["changed"] is False
    assert by_id["r05"]["content_hash"] == content_hash(str(small_rows()[5]["text"]).encode()).hex()
    # The redacted text lives in changes/, the manifest hashes the version's (redacted) content.
    changes = pq.read_table(vdir / "changes" / "records.parquet").to_pylist()
    assert changes == [{"record_id": "r03", "text": EMAIL_TEXT.replace("alice.smith@example.com", "[EMAIL]")}]
    assert by_id["r03"]["changed"] is True
    assert by_id["r03"]["content_hash"] == content_hash(changes[0]["text"].encode()).hex()
    assert data.read_bytes() == source_bytes  # the source is never modified
    # One log entry for the version, holding the digest of its version.json.
    (entry,) = [e for e in Workspace(ws_dir).log.entries() if e["command"].startswith("curate")]
    assert entry["outputs"] == {"versions/v1/version.json": sha256_file(vdir / "version.json")}
    assert verify_workspace(str(ws_dir)).ok


def test_export_applies_changes_and_refuses_a_non_empty_folder(
    project: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, policy, ws_dir = project
    curate(data, policy, ws_dir, workers=1)
    result = export_version(ws_dir, "v1", tmp_path / "out", "parquet")
    assert result.records == 12
    table = pq.read_table(tmp_path / "out" / "data.parquet")
    rows = {r["id"]: r for r in table.to_pylist()}
    assert "dup" not in rows and rows["r03"]["text"].startswith("please write to [EMAIL]")
    assert table.column_names == ["id", "text", "label", "split"]
    jsonl = export_version(ws_dir, "v1", tmp_path / "out-jsonl", "jsonl")
    first = json.loads((jsonl.path / "data.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "text", "label", "split"}

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_version(ws_dir, "v1", tmp_path / "busy", "parquet")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    with pytest.raises(WorkspaceError, match="no version 'v7'"):
        export_version(ws_dir, "v7", tmp_path / "x", "parquet")
    assert not (tmp_path / "x").exists()
    assert [e["command"].split()[0] for e in Workspace(ws_dir).log.entries()] == [
        "init",
        "curate",
        "export",
        "export",
    ]


def test_export_hf_round_trips_through_the_reader(project: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("datasets", reason="the hf export needs the datasets package (curata[hf])")
    from curata.io import read_dataset

    data, policy, ws_dir = project
    curate(data, policy, ws_dir, workers=1)
    export_version(ws_dir, "v1", tmp_path / "hf", "hf")
    back = read_dataset(tmp_path / "hf")
    assert sorted(back.record_ids.to_pylist()) == sorted(r for r in (f"r{i:02d}" for i in range(12)))
    assert back.roles.split is not None and sorted(set(back.splits())) == ["test", "train"]


def test_export_detects_a_changed_source(project: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, policy, ws_dir = project
    curate(data, policy, ws_dir, workers=1)
    rows = small_rows()
    rows[5]["text"] = "this text was edited after curation " + str(rows[5]["text"])
    write_parquet(data, rows)
    with pytest.raises(WorkspaceError, match="no longer matches the manifest"):
        export_version(ws_dir, "v1", tmp_path / "out", "parquet")
    assert not (tmp_path / "out").exists()
    result = verify_workspace(str(ws_dir), sources=True)
    assert not result.ok and "r05" in result.problems[0].message


def test_diff_explains_changes_between_versions(project: tuple[Path, Path, Path]) -> None:
    data, policy, ws_dir = project
    curate(data, policy, ws_dir, workers=1)
    lax = policy.with_name("lax.yaml")
    lax.write_text(
        FAST.replace("exact_duplicate: drop", "exact_duplicate: keep").replace("pii: redact", "pii: keep")
    )
    second = curate(data, lax, ws_dir, workers=1)
    assert second.version == "v2" and second.parent == "v1"
    d = diff_versions(str(ws_dir), "v1", "v2")
    rows = {r["record_id"]: r for r in d.rows()}
    assert d.counts() == {"added": 1, "changed": 1}
    assert rows["dup"]["change"] == "added" and rows["dup"]["check"] == "exact_duplicate"
    assert "v1 had dropped it" in rows["dup"]["reason"]
    assert rows["r03"]["change"] == "changed" and "v1 had redacted it" in rows["r03"]["reason"]
    back = diff_versions(str(ws_dir), "v2", "v1")
    assert {r["record_id"]: r["change"] for r in back.rows()} == {"dup": "removed", "r03": "changed"}
    assert back.rows()[0]["check"] == "exact_duplicate" or back.rows()[1]["check"] == "exact_duplicate"
    single = diff_versions(str(ws_dir), None, "v1")
    assert {(r["record_id"], r["change"]) for r in single.rows()} == {("dup", "removed"), ("r03", "changed")}


def test_missing_version_and_uninitialised_workspace(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="run `curata init`"):
        Workspace(tmp_path / ".curata").version("v1")
    ws = Workspace(tmp_path / ".curata")
    assert ws.init() is True and ws.init() is False
    assert [e["command"] for e in ws.log.entries()] == ["init"]
    with pytest.raises(WorkspaceError, match="versions: none yet"):
        ws.version("v1")
    with pytest.raises(WorkspaceError, match="not a version id"):
        ws.version("latest")
    assert ws.next_version_id() == "v1"


# ---------------------------------------------------------------- lock and atomicity


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".curata")
    with ws.lock("first"):
        holder = json.loads(ws.lock_path.read_text())
        assert holder["command"] == "first" and holder["host"] == socket.gethostname()
        with pytest.raises(WorkspaceError, match=r"locked by pid \d+ .*'first'"), ws.lock("second"):
            pass
        assert ws.lock_path.exists()
    assert not ws.lock_path.exists()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".curata")
    ws.root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ws.lock_path.write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": "t", "command": "c"})
    )
    warnings: list[str] = []
    with ws.lock("mine", on_warning=warnings.append):
        assert json.loads(ws.lock_path.read_text())["command"] == "mine"
    assert len(warnings) == 1 and "stale lock" in warnings[0]
    assert not ws.lock_path.exists()
    # A lock from another host is never judged stale.
    ws.lock_path.write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "time": "t", "command": "c"}))
    with pytest.raises(WorkspaceError, match="on elsewhere"), ws.lock("mine"):
        pass


def test_a_failed_curate_leaves_no_half_version(
    project: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from curata.curate import apply

    data, policy, ws_dir = project
    curate(data, policy, ws_dir, workers=1)
    ws = Workspace(ws_dir)
    log_before = ws.log.path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(apply, "build_manifest", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        curate(data, policy, ws_dir, workers=1)
    assert ws.version_ids() == ["v1"]
    assert not any((ws_dir / "tmp").iterdir())
    assert not ws.lock_path.exists()
    assert ws.log.path.read_bytes() == log_before
    assert verify_workspace(str(ws_dir)).ok


def test_dry_run_writes_nothing(project: tuple[Path, Path, Path]) -> None:
    data, policy, ws_dir = project
    result = curate(data, policy, ws_dir, dry_run=True, workers=1)
    assert result.dry_run and result.version is None
    assert result.plan.summary()["drop"] == {"exact_duplicate": 1}
    assert not ws_dir.exists()


def test_verify_names_each_tampered_version(project: tuple[Path, Path, Path]) -> None:
    import shutil

    data, policy, ws_dir = project
    curate(data, policy, ws_dir, workers=1)
    curate(data, policy, ws_dir, workers=1)
    v1, v2 = ws_dir / "versions" / "v1", ws_dir / "versions" / "v2"
    meta = json.loads((v2 / "version.json").read_text())
    meta["counts"]["records"] = 1000
    (v2 / "version.json").write_text(json.dumps(meta))
    (v1 / "plan.parquet").write_bytes((v1 / "plan.parquet").read_bytes() + b"x")
    (v1 / "extra.txt").write_text("added later")
    (v1 / "changes" / "records.parquet").unlink()
    found = [f"{p.subject}: {p.message}" for p in verify_workspace(str(ws_dir)).problems]
    assert any("v1/plan.parquet was edited" in m for m in found)
    assert any("v1/changes/records.parquet is missing" in m for m in found)
    assert any("v1/extra.txt is not part of the version" in m for m in found)
    assert any("v2/version.json was edited" in m and "log entry 3" in m for m in found)
    assert len(found) == 4
    shutil.rmtree(v2)
    found = [p.message for p in verify_workspace(str(ws_dir)).problems]
    assert any("v2 is recorded in log entry 3 but missing" in m for m in found)
    assert Workspace(ws_dir).next_version_id() == "v3"  # ids are never reused
