"""The command line: exit codes 0/1/2, one-line errors without tracebacks, the summary."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curata.cli import app

from conftest import random_text, write_parquet

runner = CliRunner()


def rows_with_leak() -> list[dict[str, object]]:
    rng = random.Random(3)
    rows: list[dict[str, object]] = [
        {"id": f"r{i}", "text": random_text(rng, 40), "split": "train"} for i in range(10)
    ]
    rows.append({"id": "leak", "text": rows[0]["text"], "split": "test"})
    return rows


def test_ok_exit_zero_and_summary(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "d.parquet", rows_with_leak())
    res = runner.invoke(app, ["audit", str(data), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "split_leakage" in res.output and "report.html" in res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["checks"]["split_leakage"]["count"] == 1
    assert report["exit"] == {"fail_on": None, "worst_severity": "error", "code": 0}


@pytest.mark.parametrize(("fail_on", "code"), [("error", 1), ("warning", 1)])
def test_fail_on_gives_exit_one(tmp_path: Path, fail_on: str, code: int) -> None:
    data = write_parquet(tmp_path / "d.parquet", rows_with_leak())
    res = runner.invoke(
        app, ["audit", str(data), "-o", str(tmp_path / "out"), "--fail-on", fail_on, "--workers", "1", "-q"]
    )
    assert res.exit_code == code


def test_fail_on_error_passes_with_only_warnings(tmp_path: Path) -> None:
    rng = random.Random(4)
    rows = [{"id": f"r{i}", "text": random_text(rng, 40)} for i in range(5)] + [{"id": "e", "text": ""}]
    data = write_parquet(tmp_path / "d.parquet", rows)
    res = runner.invoke(
        app, ["audit", str(data), "-o", str(tmp_path / "o1"), "--fail-on", "error", "-q", "--workers", "1"]
    )
    assert res.exit_code == 0
    res = runner.invoke(
        app, ["audit", str(data), "-o", str(tmp_path / "o2"), "--fail-on", "warning", "-q", "--workers", "1"]
    )
    assert res.exit_code == 1


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "curata.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_input_is_one_line_exit_two(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,a\nbroken,b,extra\n")
    proc = _run("audit", str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.csv" in lines[0] and "line 3" in lines[0]


def test_one_bad_json_line_does_not_stop_the_audit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a fine record with enough words"}\n{"text": broken\n{"text": ""}\n')
    proc = _run("audit", str(bad), "--out", str(tmp_path / "out"), "--fail-on", "error", "-q")
    assert proc.returncode == 1, proc.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out" / "findings.parquet").to_pylist()
    assert {(r["check"], r["record_id"]) for r in rows} == {("corrupt", "1"), ("empty", "2")}
    corrupt = next(r for r in rows if r["check"] == "corrupt")
    assert "bad.jsonl line 2: malformed JSON" in corrupt["message"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["MISSING", "--out", "OUT"], "MISSING"),
        (["DATA", "--out", "OUT", "--text-column", "nope"], "nope"),
        (["DATA", "--out", "OUT", "--fail-on", "sometimes"], "--fail-on"),
        (["DATA", "--out", "OUT", "--checks", "bogus"], "bogus"),
        (["DATA", "--out", "OUT", "--workers", "0"], "--workers"),
        (["DATA", "--out", "OUT", "--min-jaccard", "1.5"], "jaccard"),
    ],
)
def test_usage_errors_name_the_problem(tmp_path: Path, args: list[str], needle: str) -> None:
    data = write_parquet(tmp_path / "d.parquet", rows_with_leak())
    args = [
        a.replace("DATA", str(data))
        .replace("OUT", str(tmp_path / "out"))
        .replace("MISSING", str(tmp_path / "missing.parquet"))
        for a in args
    ]
    res = runner.invoke(app, ["audit", *args])
    assert res.exit_code == 2, res.output
    assert needle.lower() in res.output.lower()
    assert "Traceback" not in res.output


def test_out_folder_with_foreign_files_is_refused(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "d.parquet", rows_with_leak())
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    res = runner.invoke(app, ["audit", str(data), "--out", str(out), "-q"])
    assert res.exit_code == 2 and "precious.txt" in res.output
    assert (out / "precious.txt").read_text() == "keep me"


def test_a_file_error_while_running_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk (or a file gone) under a running audit ends in one line, not a traceback."""
    import errno

    from curata import cli
    from curata.signals.cache import SignalCache

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ws" / "part.arrow"))

    monkeypatch.setattr(SignalCache, "store", full)
    data = write_parquet(tmp_path / "d.parquet", rows_with_leak())
    out = tmp_path / "out"
    monkeypatch.setattr(
        sys, "argv", ["curata", "audit", str(data), "--out", str(out), "--workers", "1", "--quiet"]
    )
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    printed = capsys.readouterr().err.strip()
    assert printed.startswith("error:") and "No space left on device" in printed
    assert "Traceback" not in printed
    assert not (out / "findings.parquet").exists()
