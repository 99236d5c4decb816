"""Cross-record steps on the Ray engine (exact groups, connected components) equal the local engine's.

The Ray tests run on the session's 2-CPU head started with ``ray start --head`` (``conftest.cluster``),
with the chunk and partition sizes made small so that several map and reduce tasks really run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from curata import outofcore
from curata.audit import AuditResult, AuditSettings, audit
from curata.engine import LocalEngine
from curata.engine.grouping import group_representatives
from curata.errors import ConfigError
from curata.signals import pipeline

from conftest import edit_words, random_text, write_parquet

ray = pytest.importorskip("ray", reason="needs curata[ray]")
from curata.engine import ray as ray_engine  # noqa: E402
from curata.engine.ray import RayEngine  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 200 keys and partitions of 300: a few thousand rows make several tasks of each."""
    monkeypatch.setattr(ray_engine, "CHUNK_KEYS", 200)
    monkeypatch.setattr(ray_engine, "PARTITION_KEYS", 300)


# -- exact groups ----------------------------------------------------------------------------------


def _keys(kind: str, n: int, rng: np.random.Generator) -> pa.ChunkedArray:
    """``n`` keys of ``kind`` drawn from n/4 distinct values (so most are repeated), ~5% null,
    in chunks of random sizes (as signal batches make them)."""
    pick = rng.integers(0, max(1, n // 4), n)
    if kind == "hash16":
        distinct = rng.integers(0, 256, (max(1, n // 4), 16), dtype=np.uint8)
        values: list[Any] = [bytes(distinct[i]) for i in pick]
        key_type = pa.binary(16)
    elif kind == "string":
        values, key_type = [f"pixels-{i:x}" for i in pick], pa.string()
    elif kind == "binary8":
        values, key_type = [int(i).to_bytes(8, "little") for i in pick], pa.binary(8)
    else:
        values, key_type = [int(i) - n // 8 for i in pick], pa.int64()  # negative keys too
    for row in np.flatnonzero(rng.random(n) < 0.05):
        values[row] = None
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, 6), replace=False)) if n > 1 else []
    pieces = np.split(np.arange(n), cuts)
    return pa.chunked_array([pa.array([values[i] for i in p], key_type) for p in pieces], type=key_type)


@pytest.mark.parametrize("kind", ["hash16", "string", "binary8", "int64"])
@pytest.mark.usefixtures("small_chunks")
def test_group_representatives_equal_local(
    cluster: dict[str, Any], kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    keys = _keys(kind, n, rng)
    valid = rng.random(n) > 0.15
    rank = rng.permutation(n).astype(np.int64)  # not row order: representatives are not the first rows
    want = LocalEngine(workers=1).group_representatives(keys, valid, rank)
    got = cluster["engine"].group_representatives(keys, valid, rank)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    # Keys kept in files the workers reach (a file per chunk, as the signal cache's parts): the map
    # tasks read them there, this process sends only valid flags and ranks.
    files = []
    for k, chunk in enumerate(keys.chunks):
        table = pa.table({"key": chunk})
        outofcore.write_arrow_file(tmp_path / f"part-{k}.arrow", [table], table.schema)
        files.append((str(tmp_path / f"part-{k}.arrow"), len(chunk)))
    from curata.engine import ColumnRows, grouping

    sent: list[int] = []
    batches = grouping.key_batches
    monkeypatch.setattr(grouping, "key_batches", lambda *a: sent.append(1) or batches(*a))
    stored = ColumnRows(keys, None, "key", tuple(files))
    np.testing.assert_array_equal(cluster["engine"].group_representatives(stored, valid, rank), want)
    assert sent == []  # no entries made in this process
    np.testing.assert_array_equal(LocalEngine(workers=1).group_representatives(stored, valid, rank), want)
    members = got >= 0
    assert (got[~valid] == -1).all() and (got[np.asarray(keys.is_null())] == -1).all()
    assert (rank[got[members]] <= rank[members]).all()
    assert int((got[members] != np.flatnonzero(members)).sum()) > n // 3  # many planted duplicates
    # Past max_in_memory_rows the driver's per-record vectors are file-backed, made in chunks.
    with outofcore.configured(max_in_memory_rows=0, chunk_rows=97):
        spilled = cluster["engine"].group_representatives(keys, valid, rank)
    assert isinstance(spilled, np.memmap)
    np.testing.assert_array_equal(spilled, want)


def test_group_representatives_one_partition_and_edge_cases(cluster: dict[str, Any]) -> None:
    """One worker (a single partition, Ray's single return), and inputs with nothing to group."""
    one = RayEngine(workers=1)
    local = LocalEngine(workers=1)
    rng = np.random.default_rng(8)
    keys = _keys("hash16", 500, rng)
    valid = np.ones(500, dtype=bool)
    rank = np.arange(500, dtype=np.int64)[::-1].copy()
    np.testing.assert_array_equal(
        one.group_representatives(keys, valid, rank), local.group_representatives(keys, valid, rank)
    )
    few = pa.chunked_array([pa.array(["a", "a", None, "b"])])
    for flags in ([False] * 4, [True, False, True, True], [True] * 4):
        mask = np.array(flags)
        ranks = np.array([3, 2, 1, 0], np.int64)
        np.testing.assert_array_equal(
            cluster["engine"].group_representatives(few, mask, ranks),
            local.group_representatives(few, mask, ranks),
        )


def test_local_group_representatives_duckdb_equals_in_memory() -> None:
    """Text and integer keys (``test_out_of_core`` covers the 16-byte hashes) group alike both ways."""
    rng = np.random.default_rng(9)
    for kind in ("string", "int64", "binary8"):
        keys = _keys(kind, 700, rng)
        valid = rng.random(700) > 0.2
        rank = rng.permutation(700).astype(np.int64)
        in_memory = group_representatives(keys, valid, rank)
        with outofcore.configured(max_in_memory_rows=0, chunk_rows=64) as stats:
            on_disk = group_representatives(keys, valid, rank)
        assert stats.duckdb_calls == 1
        np.testing.assert_array_equal(on_disk, in_memory)


# -- connected components --------------------------------------------------------------------------


@pytest.mark.usefixtures("small_chunks")
def test_connected_components_equal_local(cluster: dict[str, Any]) -> None:
    rng = np.random.default_rng(4)
    n = 2000
    chain = np.stack([np.arange(1, 400), np.arange(0, 399)], axis=1)[::-1]  # a long path
    random_edges = rng.integers(400, n, (900, 2))
    stars = np.stack([np.full(50, 1999), rng.integers(400, n, 50)], axis=1)
    pairs = np.concatenate([chain, random_edges, stars])
    local = LocalEngine(workers=1)
    # Also file-backed int32 pairs, as the duplicate steps pass them past max_in_memory_rows.
    with outofcore.configured(max_in_memory_rows=0):
        mapped = outofcore.row_array(len(pairs), np.int32, width=2)
    mapped[:] = pairs
    for edges in (pairs, pairs[:, ::-1].copy(), np.zeros((0, 2), np.int64), mapped):
        np.testing.assert_array_equal(
            cluster["engine"].connected_components(n, edges), local.connected_components(n, edges)
        )
    with pytest.raises(ConfigError, match="outside"):
        cluster["engine"].connected_components(10, np.array([[0, 10]]))


# -- a whole audit: the same findings from both engines ----------------------------------------------


#: The checks built on the cross-record steps (exact groups, near pairs, clusters, reference joins).
CROSS_RECORD_CHECKS = (
    "exact_duplicate",
    "near_duplicate",
    "conflicting_labels",
    "split_leakage",
    "contamination",
)


def _findings(result: AuditResult) -> set[tuple[Any, ...]]:
    rows = result.findings.select(["check", "record_id", "related_id", "group_id", "severity", "score"])
    return {(*r[:5], round(r[5], 6)) for r in (tuple(d.values()) for d in rows.to_pylist())}


def test_audit_findings_equal_local(cluster: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(21)
    base = [random_text(rng, 40) for _ in range(120)]
    split = ["test" if i % 7 == 0 else "train" for i in range(len(base))]
    rows: list[dict[str, object]] = [
        {"id": f"r{i}", "text": t, "label": f"c{i % 3}", "split": split[i]} for i, t in enumerate(base)
    ]
    # Exact copies (of test records too: leakage), with other labels; near copies across splits.
    rows += [{"id": f"x{i}", "text": base[i], "label": "c9", "split": "train"} for i in range(0, 10)]
    rows += [{"id": f"y{i}", "text": base[i], "label": f"c{i % 3}", "split": "test"} for i in range(3, 6)]
    rows += [
        {"id": f"n{i}", "text": edit_words(base[i], rng, 2), "label": f"c{i % 3}", "split": "train"}
        for i in range(14, 30)
    ]
    rows += [{"id": "e0", "text": "", "label": "c0", "split": "train"}]
    rng.shuffle(rows)
    data = write_parquet(tmp_path / "data.parquet", rows)
    reference = [{"id": f"ref{k}", "text": base[i]} for k, i in enumerate((40, 41, 42, 42))]
    reference += [{"id": "ref-near", "text": edit_words(base[50], rng, 1)}, {"id": "ref-empty", "text": ""}]
    reference += [{"id": f"ref-other{i}", "text": random_text(rng, 40)} for i in range(20)]
    ref = write_parquet(tmp_path / "reference.parquet", reference)
    settings = AuditSettings(signals=pipeline.SignalSettings(batch_size=40), checks=CROSS_RECORD_CHECKS)

    local = audit(data, tmp_path / "local", references=[ref], settings=settings, workers=1)
    remote = audit(
        data,
        tmp_path / "ray",
        references=[ref],
        settings=settings,
        engine="ray",
        ray_address=cluster["address"],
    )
    wanted = _findings(local)
    assert {f[0] for f in wanted} == set(CROSS_RECORD_CHECKS)
    assert ("contamination", "r42", "ref2") in {f[:3] for f in wanted}  # the first of two copies
    assert _findings(remote) == wanted
    statuses = {name: (c["status"], c.get("count")) for name, c in remote.report["checks"].items()}
    assert statuses == {name: (c["status"], c.get("count")) for name, c in local.report["checks"].items()}
