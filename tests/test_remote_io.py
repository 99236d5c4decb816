"""DATA in an object store: Parquet read through pyarrow's S3 file system from a local moto server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
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
    assert pa.types.is_string(whole.table.column("text").type)
    one = read_dataset("s3://bkt/set/p1.parquet")
    assert one.record_ids.to_pylist() == [f"r{i}" for i in range(5, 10)]
    with pytest.raises(InputError, match="no such file"):
        read_dataset("s3://bkt/missing")
    with pytest.raises(InputError, match="only Parquet"):
        read_dataset("s3://bkt/notes")


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
