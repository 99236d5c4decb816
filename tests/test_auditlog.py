"""The hash-chained audit log: appends chain, and verify names edited, reordered and deleted entries."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from curata.errors import WorkspaceError
from curata.versions.auditlog import GENESIS, AuditLog, entry_hash
from curata.versions.files import canonical_json


def make_log(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path)
    for i in range(1, n + 1):
        log.append(
            f"command {i}",
            inputs={"data": f"{i:064x}"},
            outputs={"out": f"{i + 100:064x}"},
            user="tester@host",
        )
    return log


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def write_lines(log: AuditLog, new: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in new), encoding="utf-8")


def messages(log: AuditLog) -> list[str]:
    return [p.message for p in log.verify()]


def test_entries_are_chained_and_verify_clean(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    entries = log.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    for e in entries:
        assert e["hash"] == entry_hash(e)
        assert set(e) == {"seq", "time", "user", "command", "inputs", "outputs", "prev", "hash"}
    assert log.read_head() == {"seq": 4, "hash": entries[-1]["hash"]}
    assert log.verify() == []


def test_edited_entry_is_named(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    raw = lines(log)
    entry = json.loads(raw[1])
    entry["command"] = "command 2 --something-else"
    raw[1] = canonical_json(entry).decode()
    write_lines(log, raw)
    found = messages(log)
    assert len(found) == 1
    assert "entry 2 (line 2" in found[0] and "was edited" in found[0]


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    raw = lines(log)
    entry = json.loads(raw[1])
    entry["outputs"] = {"out": "0" * 64}
    entry["hash"] = entry_hash(entry)
    raw[1] = canonical_json(entry).decode()
    write_lines(log, raw)
    found = messages(log)
    assert any("entry 3" in m and "does not chain to entry 2" in m for m in found)


def test_reordered_entries_are_named(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    raw = lines(log)
    raw[1], raw[2] = raw[2], raw[1]
    write_lines(log, raw)
    found = messages(log)
    assert any("entry 3 (line 2" in m and "deleted or reordered" in m for m in found)
    assert any("entry 2 (line 3" in m for m in found)


def test_deleted_middle_entry_is_named(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    raw = lines(log)
    del raw[1]
    write_lines(log, raw)
    found = messages(log)
    assert any("entry 3" in m and "follows entry 1" in m for m in found)


def test_deleted_last_entry_is_caught_by_the_head(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    write_lines(log, lines(log)[:-1])
    found = messages(log)
    assert len(found) == 1 and "ends at entry 3 but its head records entry 4" in found[0]


def test_garbage_line_and_missing_head(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    raw = lines(log)
    raw.insert(2, "{not json")
    write_lines(log, raw)
    assert any("line 3 is not valid JSON" in m for m in messages(log))
    (tmp_path / "other").mkdir()
    log = make_log(tmp_path / "other")
    log.head_path.unlink()
    assert any("log.head is missing" in m for m in messages(log))


def test_append_refuses_a_log_changed_outside_curata(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    write_lines(log, lines(log)[:-1])
    before = log.path.read_bytes()
    with pytest.raises(WorkspaceError, match="does not end at its head"):
        log.append("command 5")
    assert log.path.read_bytes() == before
