"""The signal cache (nothing expensive recomputed) and the findings contract tool."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curata.audit import audit

from conftest import encode, pattern_image, random_text, write_image_folder, write_parquet

CONTRACT_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"


def test_second_audit_recomputes_nothing(tmp_path: Path) -> None:
    rng = random.Random(8)
    rows = [{"text": random_text(rng, 30)} for _ in range(50)]
    data = write_parquet(tmp_path / "d.parquet", rows)
    first = audit(data, tmp_path / "o1", workers=1, workspace=tmp_path / "ws")
    assert first.report["signals"] == {"modality": "text", "computed": 50, "cached": 0}
    second = audit(data, tmp_path / "o2", workers=1, workspace=tmp_path / "ws")
    assert second.report["signals"] == {"modality": "text", "computed": 0, "cached": 50}
    assert first.findings.equals(second.findings)
    rows.append({"text": "a brand new record that was not there before at all"})
    write_parquet(data, rows)
    third = audit(data, tmp_path / "o3", workers=1, workspace=tmp_path / "ws")
    assert third.report["signals"]["computed"] == 1 and third.report["signals"]["cached"] == 50


def test_image_cache_and_changed_settings(tmp_path: Path) -> None:
    layout = {f"c/{i}.png": encode(pattern_image(i)) for i in range(6)}
    data = write_image_folder(tmp_path / "img", layout)
    first = audit(data, tmp_path / "o1", workers=1, workspace=tmp_path / "ws")
    assert first.report["signals"]["computed"] == 6
    second = audit(data, tmp_path / "o2", workers=1, workspace=tmp_path / "ws")
    assert second.report["signals"]["cached"] == 6 and second.report["signals"]["computed"] == 0


def test_process_pool_matches_single_process(tmp_path: Path) -> None:
    rng = random.Random(9)
    base = [random_text(rng, 40) for _ in range(30)]
    rows = [{"text": t} for t in base] + [{"text": t.upper()} for t in base[:5]]
    data = write_parquet(tmp_path / "d.parquet", rows)
    from dataclasses import replace

    from curata.audit import AuditSettings
    from curata.signals.pipeline import SignalSettings

    small_batches = AuditSettings(signals=replace(SignalSettings(), batch_size=7))
    one = audit(data, tmp_path / "o1", workers=1, settings=small_batches, workspace=tmp_path / "w1")
    two = audit(data, tmp_path / "o2", workers=2, settings=small_batches, workspace=tmp_path / "w2")
    assert one.findings.equals(two.findings)
    assert one.findings.num_rows == 5


@pytest.mark.skipif(
    not CONTRACT_TOOL.exists(), reason="../shared/tools/check_findings.py not beside the repo"
)
def test_output_follows_findings_contract(tmp_path: Path) -> None:
    rng = random.Random(10)
    rows = [{"id": f"x{i}", "text": random_text(rng, 30), "split": "train"} for i in range(20)]
    rows += [
        {"id": "dup", "text": rows[0]["text"], "split": "test"},
        {"id": "x3", "text": "", "split": "train"},
    ]
    data = write_parquet(tmp_path / "d.parquet", rows)
    audit(data, tmp_path / "out", workers=1)
    assert pq.read_table(tmp_path / "out" / "findings.parquet").num_rows >= 3
    proc = subprocess.run(
        [sys.executable, str(CONTRACT_TOOL), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "contract holds" in proc.stdout
