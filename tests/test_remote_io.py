"""DATA in an object store (Parquet, CSV, JSON lines) read through pyarrow's S3 file system from moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curata.audit import AuditSettings, audit
from curata.errors import InputError
from curata.io import read_dataset
from curata.io.remote import is_remote

from conftest import write_parquet

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 client of a fresh in-process S3 server, which AWS_ENDPOINT_URL points pyarrow at."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        yield boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


def test_is_remote() -> None:
    assert is_remote("s3://bucket/x.parquet") and is_remote("gs://b/dir")
    assert (
        not is_remote("file:///tmp/x.parquet") and not is_remote("C://data") and not is_remote("data.parquet")
    )
    assert not is_remote(Path("s3://bucket"))  # a Path has lost its '//' already


def test_remote_parquet_reads_like_local(s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="bkt")
    rows = [{"id": f"r{i}", "text": f"text number {i}", "label": i % 2} for i in range(10)]
    for part in range(2):
        path = write_parquet(tmp_path / f"p{part}.parquet", rows[part * 5 : part * 5 + 5])
        s3.put_object(Bucket="bkt", Key=f"set/p{part}.parquet", Body=path.read_bytes())
    s3.put_object(Bucket="bkt", Key="notes/readme.txt", Body=b"hello")
    whole = read_dataset("s3://bkt/set", label_column="label")
    assert whole.num_rows == 10 and whole.source == "s3://bkt/set"
    assert whole.record_ids.to_pylist() == [f"r{i}" for i in range(10)]
    assert whole.roles.text == "text" and whole.roles.label == "label"
    # The text stays in the store, streamed by row groups; the other columns are in memory.
    assert whole.content is not None and whole.content.filesystem is not None
    assert "text" not in whole.table.column_names
    assert whole.column("text").to_pylist() == [r["text"] for r in rows]
    assert whole.take("text", np.array([7, 2])).to_pylist() == ["text number 7", "text number 2"]
    assert whole.description["columns"] == ["id", "text", "label"]
    one = read_dataset("s3://bkt/set/p1.parquet")
    assert one.record_ids.to_pylist() == [f"r{i}" for i in range(5, 10)]
    with pytest.raises(InputError, match="no such file"):
        read_dataset("s3://bkt/missing")
    with pytest.raises(InputError, match=r"no table files .*readme\.txt"):
        read_dataset("s3://bkt/notes")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_remote_csv_and_json_lines_read_like_local(s3: Any, tmp_path: Path, fmt: str) -> None:
    s3.create_bucket(Bucket=f"txt-{fmt}")
    rows = [
        {"id": f"r{i}", "text": f"text number {i}, with a comma", "label": f"c{i % 2}"} for i in range(12)
    ]
    local_folder = tmp_path / "local"
    local_folder.mkdir()
    for part in range(3):
        table = pa.Table.from_pylist(rows[part * 4 : part * 4 + 4])
        path = local_folder / f"part-{part}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(table, path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
        s3.put_object(Bucket=f"txt-{fmt}", Key=f"shards/part-{part}.{fmt}", Body=path.read_bytes())
    s3.put_object(Bucket=f"txt-{fmt}", Key="shards/_SUCCESS", Body=b"")
    local = read_dataset(local_folder)
    remote = read_dataset(f"s3://txt-{fmt}/shards")
    assert remote.source == f"s3://txt-{fmt}/shards" and str(remote.root).startswith("s3:")
    assert remote.record_ids.to_pylist() == local.record_ids.to_pylist() == [f"r{i}" for i in range(12)]
    assert remote.roles == local.roles and remote.roles.text == "text"
    assert remote.table.equals(local.table)
    one = read_dataset(f"s3://txt-{fmt}/shards/part-1.{fmt}")
    assert one.record_ids.to_pylist() == [f"r{i}" for i in range(4, 8)]
    s3.put_object(Bucket=f"txt-{fmt}", Key="mixed/a.csv", Body=b"id,text\n1,x\n")
    s3.put_object(
        Bucket=f"txt-{fmt}", Key="mixed/b.parquet", Body=(local_folder / f"part-0.{fmt}").read_bytes()
    )
    with pytest.raises(InputError, match="mixes table formats"):
        read_dataset(f"s3://txt-{fmt}/mixed")


def test_audit_of_s3_data_equals_local(s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="audit")
    rows = [{"id": f"r{i}", "text": f"record {i} " * 8, "split": "train"} for i in range(12)]
    rows.append({"id": "leak", "text": rows[0]["text"], "split": "test"})
    data = write_parquet(tmp_path / "d.parquet", rows)
    s3.put_object(Bucket="audit", Key="d.parquet", Body=data.read_bytes())
    fast = AuditSettings(checks=("exact_duplicate", "near_duplicate", "split_leakage"))
    local = audit(data, tmp_path / "local", workers=1, settings=fast)
    remote = audit("s3://audit/d.parquet", tmp_path / "remote", workers=1, settings=fast)
    keep = ["check", "record_id", "related_id", "score"]
    assert local.findings.num_rows >= 1
    assert remote.findings.select(keep).to_pylist() == local.findings.select(keep).to_pylist()
    assert remote.report["input"]["path"] == "s3://audit/d.parquet"


def test_cli_reference_in_the_store_finds_contamination(s3: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curata.cli import app

    s3.create_bucket(Bucket="bench")
    questions = [f"benchmark question number {i} about the colour of the sky at noon" for i in range(6)]
    body = "".join(json.dumps({"id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(questions))
    s3.put_object(Bucket="bench", Key="eval/test.jsonl", Body=body.encode())
    rows = [
        {"id": f"r{i}", "text": f"an ordinary training sentence, number {i}, of no interest"}
        for i in range(10)
    ]
    rows.append({"id": "leaked", "text": questions[3]})
    data = write_parquet(tmp_path / "train.parquet", rows)
    out = tmp_path / "out"
    args = ["audit", str(data), "--reference", "s3://bench/eval/test.jsonl", "--checks", "contamination"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "-q"])
    assert result.exit_code in (0, 1), result.output
    found = pq.read_table(out / "findings.parquet").to_pylist()
    assert {f["record_id"] for f in found if f["check"] == "contamination"} == {"leaked"}
