"""Large CSV/TSV and JSON-lines data streams its content from Parquet copies (``curata.io.staging``)."""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from curata.audit import AuditSettings, audit
from curata.errors import InputError
from curata.io import read_dataset, staging

from conftest import edit_words, random_text


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    texts = [random_text(rng, 25) for _ in range(n)]
    texts[7] = texts[3]
    texts[11] = edit_words(texts[5], rng, 1)
    return [{"id": f"0{i}", "text": t, "label": f"c{i % 3}"} for i, t in enumerate(texts)]


def _write(path: Path, fmt: str, rows: list[dict[str, Any]]) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        options = pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
        pacsv.write_csv(pa.Table.from_pylist(rows), path, write_options=options)


@pytest.mark.parametrize("layout", ["file", "folder"])
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_large_text_files_stream_their_content_from_parquet_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, layout: str
) -> None:
    rows = _rows(60, seed=4)
    if layout == "file":
        data = tmp_path / f"data.{fmt}"
        _write(data, fmt, rows)
    else:
        data = tmp_path / "shards"
        data.mkdir()
        _write(data / f"a.{fmt}", fmt, rows[:25])
        _write(data / f"b.{fmt}", fmt, rows[25:])
    checks = {
        "settings": AuditSettings(checks=("exact_duplicate", "near_duplicate", "conflicting_labels", "empty"))
    }
    whole = read_dataset(data)
    assert whole.content is None and "text" in whole.table.column_names
    held = audit(data, tmp_path / "o1", workers=1, workspace=tmp_path / "ws1", **checks)

    monkeypatch.setattr(staging, "STAGE_MIN_BYTES", 1_000)  # the data is ~10 kB
    ds = read_dataset(data)
    assert ds.content is not None and ds.content.staged is not None
    assert "text" not in ds.table.column_names and ds.content.column == "text"
    assert ds.description["format"] == fmt and ds.description["files"] == whole.description["files"]
    assert ds.record_ids.to_pylist() == [r["id"] for r in rows]  # ids stay strings ("00")
    assert ds.table.equals(whole.table.drop_columns(["text"]))
    assert [v for b in ds.content_batches("text", 16) for v in b.to_pylist()] == [r["text"] for r in rows]
    assert ds.take("text", [59, 0, 30]).to_pylist() == [rows[i]["text"] for i in (59, 0, 30)]
    staged = audit(data, tmp_path / "o2", workers=1, workspace=tmp_path / "ws2", **checks)
    assert staged.findings.equals(held.findings) and held.findings.num_rows >= 3
    folder = Path(ds.content.staged.folder.name)
    assert folder.is_dir()
    del ds
    gc.collect()
    assert not folder.exists()  # the copies go with the dataset


def test_small_or_unreadable_files_are_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data.csv"
    _write(data, "csv", _rows(30, seed=1))
    assert read_dataset(data).content is None  # under STAGE_MIN_BYTES
    monkeypatch.setattr(staging, "STAGE_MIN_BYTES", 0)
    assert read_dataset(data).content is not None
    # A malformed line: the streaming reader gives up, and the whole-file reader's message names it.
    data.write_text(data.read_text(encoding="utf-8") + '"unterminated,x\n', encoding="utf-8")
    assert staging.stage_tables(data) is None
    with pytest.raises(InputError, match=r"data\.csv"):
        read_dataset(data)
    # A JSON-lines file whose bad line becomes a bad record, reported as before.
    lines = tmp_path / "d.jsonl"
    _write(lines, "jsonl", _rows(12, seed=2))
    lines.write_text(lines.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    ds = read_dataset(lines)
    assert ds.content is None and len(ds.description["bad_records"]) == 1
