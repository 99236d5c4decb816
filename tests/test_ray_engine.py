"""The Ray engine against a real local cluster (``ray start --head``): same results as the local one.

One cluster serves the whole session; this process joins it as a driver at ``127.0.0.1:PORT``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curata.audit import AuditResult, AuditSettings, audit
from curata.engine import ColumnRows, LocalEngine, get_engine
from curata.errors import ConfigError, EngineError, InputError, MissingDependencyError
from curata.io import read_dataset
from curata.lsh import candidate_pairs
from curata.signals import pipeline
from curata.signals.embed import EmbedSettings

from conftest import (
    edit_words,
    encode,
    free_port,
    pattern_image,
    random_text,
    write_image_folder,
)

if importlib.util.find_spec("ray") is None:
    pytest.skip("needs curata[ray]", allow_module_level=True)

pytestmark = pytest.mark.ray

import ray  # noqa: E402

# Functions of this module run on Ray workers, which cannot import it: ship them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- per-record work -------------------------------------------------------------------------------


def _square_slowly(batch: list[int], power: int) -> list[int]:
    # Later batches finish first, so order comes from the engine, not from timing.
    time.sleep(0.05 * (batch[0] % 3 == 0))
    return [x**power for x in batch]


def test_map_batches_in_input_order_as_local(cluster: dict[str, Any]) -> None:
    engine = cluster["engine"]
    assert engine.name == "ray" and engine.workers == 2
    batches = [list(range(i, i + 3)) for i in range(0, 60, 3)]
    got = list(engine.map_batches(_square_slowly, iter(batches), args=(2,), total=len(batches)))
    want = list(LocalEngine(workers=1).map_batches(_square_slowly, iter(batches), args=(2,)))
    assert got == want
    assert list(engine.map_batches(_square_slowly, iter([]), args=(2,))) == []


def _content_rows(table: pa.Table, tag: str) -> pa.Table:
    n = table.num_rows
    return pa.table(
        {"value": table.column("content"), "batch_rows": [n] * n, "pid": [os.getpid()] * n, "tag": [tag] * n}
    )


def test_workers_read_parquet_content_by_row_group_in_row_order(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curata.engine import ray_content
    from curata.engine.base import ContentSource

    texts = [f"text {i}" for i in range(230)]
    files = []
    for k, (a, b) in enumerate([(0, 100), (100, 230)]):
        path = tmp_path / f"part-{k}.parquet"
        pq.write_table(pa.table({"id": list(range(a, b)), "text": texts[a:b]}), path, row_group_size=30)
        files.append(str(path))
    # Row groups of 30 rows split into read tasks of at most 12 rows (their planning is on the driver).
    monkeypatch.setattr(ray_content, "MAX_PIECE_ROWS", 12)
    assert (
        len(ray_content._pieces(ContentSource("text", "text", 230, tuple(files)))) == 23
    )  # 3 + 3 + 3 + 1, 3 * 4 + 1
    source = ContentSource("text", "text", 230, tuple(files))
    blocks = list(
        cluster["engine"].map_content(source, _content_rows, args=("t",), batch_size=7, description="")
    )
    out = pa.concat_tables(blocks)
    assert out.column("value").to_pylist() == texts
    assert max(out.column("batch_rows").to_pylist()) <= 7
    assert set(out.column("tag").to_pylist()) == {"t"}
    assert os.getpid() not in set(out.column("pid").to_pylist())  # read and computed on workers
    # Content held by the driver goes through the object store in blocks, in order, the same way.
    held = ContentSource("text", "text", 230, chunks=(pa.array(texts[:50]), pa.array(texts[50:])))
    again = pa.concat_tables(
        cluster["engine"].map_content(held, _content_rows, args=("u",), batch_size=7, description="")
    )
    assert again.column("value").to_pylist() == texts


def test_workers_store_signals_in_a_shared_workspace_and_resume_from_them(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers write the signals they compute to the workspace's cache themselves (parts of at
    least STORE_ROWS rows, made of several blocks of 20); only hashes and cache positions come back.
    A resumed run over more data mixes blocks that are all cached, partly cached and new; a
    workspace the workers cannot reach falls back to storing here. Signals equal the local engine's."""
    from curata.signals.cache import SignalCache
    from curata.signals.pipeline import SignalSettings, compute_signals

    engine = cluster["engine"]
    monkeypatch.setattr(pipeline, "STORE_ROWS", 70)
    settings = SignalSettings(batch_size=20)
    rng = random.Random(11)
    texts = [random_text(rng, 25) for _ in range(150)]
    first = tmp_path / "first.parquet"
    pq.write_table(pa.table({"id": range(100), "text": texts[:100]}), first, row_group_size=40)
    # Rows 100..149 are new, placed among the old ones: some blocks all cached, some mixed.
    grown_texts = texts[:40] + texts[100:120] + texts[40:100] + texts[120:150]
    grown = tmp_path / "grown.parquet"
    pq.write_table(pa.table({"id": range(150), "text": grown_texts}), grown, row_group_size=40)

    workspace = tmp_path / "ws"
    assert engine.reaches(workspace)
    assert not list(workspace.glob(".reach-*"))  # the probe file is removed
    cache = SignalCache(workspace)
    data = read_dataset(first)
    got = compute_signals(data, engine, settings, cache)
    assert got.table.equals(compute_signals(data, LocalEngine(1), settings).table)
    # Blocks of 20 stored in batches of 70 rows (Ray Data ends a batch early at some bundles' ends).
    assert sum(rows for _, rows in got.files) == 100 and 2 <= len(got.files) <= 3
    assert max(rows for _, rows in got.files) == 70
    stored = pa.concat_tables(pa.ipc.open_file(path).read_all() for path, _ in got.files)
    assert stored.drop_columns(["content_hash"]).equals(got.table)

    data = read_dataset(grown)
    again = compute_signals(data, engine, settings, cache)
    assert (again.cached, again.computed) == (100, 50)
    assert again.table.equals(compute_signals(data, LocalEngine(1), settings).table)
    # Put in row order by tasks, into files the cross-record steps' tasks read.
    assert sum(rows for _, rows in again.files) == 150
    parts = sorted(cache.folder(settings.fingerprint("text")).glob("part-*.arrow"))
    assert sum(pa.ipc.open_file(p).read_all().num_rows for p in parts) == 150

    # Workers that do not see the workspace: the blocks come back and are stored here.
    monkeypatch.setattr(engine, "_reaches", {str(workspace.resolve() / "other"): False})
    other = SignalCache(workspace / "other")
    monkeypatch.setattr(other, "folder", lambda fingerprint: workspace.resolve() / "other")
    here = compute_signals(data, engine, settings, other)
    assert here.table.equals(again.table) and [rows for _, rows in here.files] == [150]


def test_the_workspace_probe_needs_the_token_and_a_writable_folder(tmp_path: Path) -> None:
    """A node reaches the workspace only when it reads the probe's token (and can write beside it)."""
    from curata.engine.ray import sees_probe

    probe = tmp_path / ".reach-x"
    probe.write_text("token")
    assert sees_probe(str(probe), "token")
    assert list(tmp_path.iterdir()) == [probe]  # its own file is removed
    assert not sees_probe(str(probe), "other")  # another machine's file at the same path
    assert not sees_probe(str(tmp_path / "missing"), "token")  # the path is not there


def _raise_input_error(batch: list[int]) -> list[int]:
    raise InputError(f"row {batch[0]}: unreadable")


def test_map_batches_reraises_the_functions_own_error(cluster: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=r"^row 0: unreadable$"):
        list(cluster["engine"].map_batches(_raise_input_error, iter([[0], [1]])))


class _Model:
    """Stands in for an encoder: state loaded on first use, dropped when pickled."""

    keep_per_worker = True

    def __init__(self, marker: str | None = None) -> None:
        self.marker = marker

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_loaded")}

    def load(self) -> str:
        if getattr(self, "_loaded", None) is None:
            self._loaded = f"{os.getpid()}-{time.monotonic_ns()}"
        return str(self._loaded)


def _use_model(batch: list[int], model: _Model) -> tuple[list[int], str]:
    if model.marker is not None and not os.path.exists(model.marker):
        Path(model.marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)  # the actor dies with a batch in hand
    return [x + 1 for x in batch], model.load()


def test_stateful_arguments_load_once_per_actor_and_survive_a_kill(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    # The first batch kills its actor: Ray restarts it and re-runs the batch there.
    model = _Model(marker=str(tmp_path / "killed-once"))
    batches = [[i] for i in range(12)]
    out = list(cluster["engine"].map_batches(_use_model, iter(batches), args=(model,), total=12))
    assert (tmp_path / "killed-once").exists()
    assert [r[0] for r in out] == [[i + 1] for i in range(12)]
    # Two actors (one per CPU), one restarted: the "model" loaded three times at most, not 12.
    assert len({r[1] for r in out}) <= 3


def test_encoders_go_to_actors_and_torch_ones_ask_for_a_gpu() -> None:
    from curata.engine.ray import _Actors, keeps_state, wants_gpu
    from curata.signals.embed.minilm import MiniLmEncoder
    from curata.signals.embed.tfidf import HashedTfidfSvd

    assert keeps_state(HashedTfidfSvd()) and keeps_state(_Model()) and not keeps_state(3)
    assert wants_gpu(MiniLmEncoder()) and not wants_gpu(HashedTfidfSvd()) and not wants_gpu(_Model())
    pool = _Actors(ray, _use_model, (_Model(),), size=1, gpu=True, retries=2)
    assert pool._options["num_gpus"] == 1 and pool._options["max_restarts"] == 2


def _always_die(batch: list[int]) -> list[int]:
    os.kill(os.getpid(), signal.SIGKILL)
    return batch


def test_worker_dying_past_retries_fails_with_one_line(cluster: dict[str, Any]) -> None:
    from curata.engine.ray import RayEngine

    engine = RayEngine(cluster["address"], max_retries=0)
    with pytest.raises(EngineError) as info:
        list(engine.map_batches(_always_die, iter([[1], [2]])))
    message = str(info.value)
    assert "\n" not in message and "batch 0 was lost" in message and "re-run" in message


# -- LSH buckets -----------------------------------------------------------------------------------


def _adversarial_keys() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(5)
    same = np.zeros((700, 3), np.uint32)  # every row in one bucket of each band: star + chain
    mixed = rng.integers(0, 4, (600, 4)).astype(np.uint64)  # several buckets above the cap
    mixed[:50, 0] = 2**64 - 1  # the largest key
    tiny = np.array([[7], [7], [8]], np.uint32)
    return [(same, 200), (mixed, 100), (mixed, 2), (tiny, 2), (np.zeros((1, 4), np.uint32), 200)]


@pytest.mark.parametrize("small", [False, True])
def test_bucket_pairs_equal_candidate_pairs(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch, small: bool
) -> None:
    """The shuffle gives candidate_pairs' pairs, with one map task or many (chunks of 500 keys,
    partitions of 700: a dozen map, reduce and merge tasks for the 5,000 x 8 keys)."""
    from curata.engine import ray as ray_engine

    if small:
        monkeypatch.setattr(ray_engine, "MAP_KEYS", 500)
        monkeypatch.setattr(ray_engine, "PARTITION_KEYS", 700)
    engine = cluster["engine"]
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 2000, (5000, 8)).astype(np.uint32), 200)]
    cases += _adversarial_keys()
    for keys, cap in cases:
        got = engine.bucket_pairs(keys, cap)
        want = candidate_pairs(keys, cap)
        assert got.dtype == np.int64 and got.shape[1] == 2
        np.testing.assert_array_equal(got, want)
    # Past max_in_memory_rows pairs the driver holds them file-backed, written by chunks.
    from curata import outofcore

    with outofcore.configured(max_in_memory_rows=0, chunk_rows=7):
        spilled = engine.bucket_pairs(cases[0][0], cases[0][1])
    assert isinstance(spilled, np.memmap)
    np.testing.assert_array_equal(spilled, candidate_pairs(cases[0][0], cases[0][1]))
    assert engine.bucket_pairs(np.zeros((0, 4), np.uint32)).shape == (0, 2)
    with pytest.raises(ConfigError, match="max_bucket"):
        engine.bucket_pairs(np.zeros((3, 2), np.uint32), 1)
    with pytest.raises(ConfigError, match="2-D"):
        engine.bucket_pairs(np.zeros(3, np.uint32))


def _stored_column(folder: Path, values: np.ndarray, name: str, sizes: list[int]) -> ColumnRows:
    """``values`` (rows, width) written as Arrow files of ``sizes`` rows, as a ColumnRows of them."""
    from curata import outofcore

    folder.mkdir(parents=True, exist_ok=True)
    files, tables, start = [], [], 0
    for k, size in enumerate(sizes):
        part = values[start : start + size]
        flat = pa.array(part.reshape(-1))
        column = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        table = pa.table({name: column, "other": range(size)})
        path = folder / f"part-{k}.arrow"
        outofcore.write_arrow_file(path, [table], table.schema)
        files.append((str(path), size))
        tables.append(outofcore.map_arrow_file(path))
        start += size
    assert start == len(values)
    return ColumnRows(pa.concat_tables(tables).column(name), None, name, tuple(files))


def test_stored_band_keys_and_vectors_are_read_by_the_tasks(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Band keys and vectors kept in files the workers reach: the tasks read the selected rows
    there (this process never gathers them) and the pairs and neighbours equal the local engine's
    on the gathered rows; files the workers cannot reach are gathered here and sent."""
    import dataclasses

    from curata.engine import ray as ray_engine

    engine = cluster["engine"]
    monkeypatch.setattr(ray_engine, "MAP_KEYS", 4_000)  # several map tasks, each over a few files
    monkeypatch.setattr(ray_engine, "KNN_QUERY_ROWS", 53)
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 1500, (3000, 8)).astype(np.uint32)
    keys[2000:2010] = keys[5]  # a bucket across files
    sizes = [700, 300, 1, 999, 1000]
    stored = _stored_column(tmp_path / "keys", keys, "band_keys", sizes)
    rows = np.flatnonzero(np.arange(3000) % 7 != 3)  # some rows left out (exact copies)
    selected = dataclasses.replace(stored, rows=rows)
    want = candidate_pairs(keys[rows], 50)

    gathered = ColumnRows.to_array
    calls: list[int] = []
    monkeypatch.setattr(ColumnRows, "to_array", lambda self: calls.append(len(self)) or gathered(self))
    np.testing.assert_array_equal(engine.bucket_pairs(selected, 50), want)
    np.testing.assert_array_equal(engine.bucket_pairs(stored, 50), candidate_pairs(keys, 50))
    vectors = rng.normal(size=(900, 12)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[400] = vectors[17]  # a tie
    held = _stored_column(tmp_path / "vectors", vectors, "embedding", [250, 250, 400])
    picked = np.flatnonzero(np.arange(900) % 5 != 0)
    got = engine.nearest_neighbours(dataclasses.replace(held, rows=picked), 5, "cosine")
    assert calls == []  # nothing was gathered in this process
    local = LocalEngine(workers=1).nearest_neighbours(vectors[picked], 5, "cosine")
    assert np.array_equal(got.index, local.index)
    assert np.allclose(got.distance, local.distance, atol=1e-5)

    # Unreachable files: gathered here (one call per step), the same results.
    monkeypatch.setattr(engine, "reaches", lambda folder: False)
    np.testing.assert_array_equal(engine.bucket_pairs(selected, 50), want)
    again = engine.nearest_neighbours(dataclasses.replace(held, rows=picked), 5)
    assert np.array_equal(again.index, local.index)
    assert calls == [len(rows), len(picked)]


@pytest.mark.parametrize("dims", [128, 32])
def test_semantic_duplicates_of_stored_embeddings_are_searched_by_the_tasks(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dims: int
) -> None:
    """Semantic dedup over embeddings kept in files the workers reach: the tasks read the rows (and
    write and read the screening rows: on with 128 dimensions, off with 32), this process never
    gathers them, and the pairs and cosines equal the in-memory search's. Several clusters
    (3,000 rows), some rows left out, zero rows and planted near copies across files."""
    import dataclasses

    from curata.semantic import SemanticDupSettings, semantic_duplicate_pairs

    engine = cluster["engine"]
    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(3000, dims)).astype(np.float32)
    for i in range(0, 3000, 40):  # near copies, some in another file
        vectors[(i * 7 + 13) % 3000] = vectors[i] + rng.normal(scale=0.02, size=dims).astype(np.float32)
    vectors[[5, 2500]] = 0.0  # all-zero rows match nothing
    stored = _stored_column(tmp_path / "cache" / "embed", vectors, "embedding", [1200, 1, 799, 1000])
    rows = np.flatnonzero(np.arange(3000) % 11 != 4)
    settings = SemanticDupSettings(min_cosine=0.9)
    want_pairs, want_cos = semantic_duplicate_pairs(vectors[rows], settings)
    assert len(want_pairs) > 50

    monkeypatch.setattr(ColumnRows, "to_array", lambda self: pytest.fail("gathered in the driver"))
    got_pairs, got_cos = semantic_duplicate_pairs(dataclasses.replace(stored, rows=rows), settings, engine)
    np.testing.assert_array_equal(got_pairs, want_pairs)
    np.testing.assert_array_equal(got_cos, want_cos)
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # the screening rows' folder is gone


@pytest.mark.parametrize("parts", [1, 3])
def test_bucket_shuffle_tasks_run_in_process_equal_candidate_pairs(parts: int) -> None:
    """The shuffle's map, reduce and merge functions, called in turn here (no cluster), give
    candidate_pairs' pairs: in order, each pair once though found in several bands."""
    from curata.engine import ray as ray_engine

    random_keys = np.random.default_rng(1).integers(0, 300, (900, 6)).astype(np.uint32)
    for keys, cap in [(random_keys, 5), *_adversarial_keys()]:
        n = len(keys)
        mapped = [ray_engine.split_band_keys(keys[s : s + 250], s, parts) for s in range(0, n, 250)]
        mapped = [m if parts > 1 else [m] for m in mapped]
        reduced = [ray_engine.bucket_pair_codes(cap, n, parts, *(m[p] for m in mapped)) for p in range(parts)]
        reduced = [r if parts > 1 else [r] for r in reduced]
        code = np.concatenate([ray_engine.merge_codes(*(r[q] for r in reduced)) for q in range(parts)])
        got = np.stack([code // n, code % n], axis=1)
        np.testing.assert_array_equal(got, candidate_pairs(keys, cap))


def _lowest_row_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel a partition by the lowest row of each part (so two labellings compare equal)."""
    lowest = np.full(labels.max() + 1, len(labels), np.int64)
    np.minimum.at(lowest, labels, np.arange(len(labels)))
    out: np.ndarray = lowest[labels]
    return out


def test_connected_components_equal_clusters_from_pairs(cluster: dict[str, Any]) -> None:
    from curata.checks.base import clusters_from_pairs

    engine = cluster["engine"]
    rng = np.random.default_rng(3)
    n = 3000
    chain = np.stack([np.arange(1, 900), np.arange(0, 899)], axis=1)[::-1]  # diameter 900
    random_edges = rng.integers(900, n, (1200, 2))
    for pairs in (np.concatenate([chain, random_edges]), np.zeros((0, 2), np.int64)):
        got = engine.connected_components(n, pairs)
        np.testing.assert_array_equal(got, _lowest_row_labels(clusters_from_pairs(n, pairs)))


# -- whole audits: same findings from both engines --------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_by_shards_equal_local(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch, metric: str
) -> None:
    """An index shard per worker, query blocks searched in every shard and merged: the local
    engine's neighbours, ties (planted exact duplicates) included."""
    from curata.engine import ray as ray_module
    from test_knn import _vectors

    monkeypatch.setattr(ray_module, "KNN_QUERY_ROWS", 37)  # several query blocks
    x = _vectors(metric)  # type: ignore[arg-type]
    got = cluster["engine"].nearest_neighbours(x, 6, metric)
    want = LocalEngine(workers=1).nearest_neighbours(x, 6, metric)  # type: ignore[arg-type]
    assert np.array_equal(got.index, want.index) and got.exact == want.exact
    assert np.allclose(got.distance, want.distance, atol=1e-5)


def _findings(result: AuditResult) -> set[tuple[Any, ...]]:
    rows = result.findings.select(["check", "record_id", "related_id", "group_id", "severity", "score"])
    return {(*r[:5], round(r[5], 6)) for r in (tuple(d.values()) for d in rows.to_pylist())}


def _statuses(result: AuditResult) -> dict[str, Any]:
    return {name: (c["status"], c.get("count")) for name, c in result.report["checks"].items()}


@pytest.fixture(scope="module")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Texts with planted exact and near duplicates, label conflicts and a train/test leak."""
    rng = random.Random(11)
    base = [random_text(rng, 40) for _ in range(150)]
    rows: list[dict[str, object]] = [
        {"id": f"r{i}", "text": t, "label": f"c{i % 3}", "split": "test" if i % 7 == 0 else "train"}
        for i, t in enumerate(base)
    ]
    rows += [{"id": f"x{i}", "text": base[i], "label": f"c{i % 3}", "split": "train"} for i in range(1, 9)]
    rows += [{"id": f"k{i}", "text": base[i], "label": "other", "split": "train"} for i in range(10, 14)]
    rows += [
        {"id": f"n{i}", "text": edit_words(base[i], rng, 2), "label": f"c{i % 3}", "split": "train"}
        for i in range(20, 35)
    ]
    rows += [{"id": "e0", "text": "", "label": "c0", "split": "train"}]
    # Row groups of one signal batch: on Ray a row group is a read task, the unit that is retried
    # and whose results the cache keeps when a run fails.
    path = tmp_path_factory.mktemp("text") / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=40)
    return path


TEXT_SETTINGS = AuditSettings(
    signals=pipeline.SignalSettings(batch_size=40), embed=EmbedSettings(encoder="tfidf-svd")
)


@pytest.fixture(scope="module")
def text_local(text_data: Path, tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    out = tmp_path_factory.mktemp("local") / "out"
    return audit(text_data, out, settings=TEXT_SETTINGS, workers=1)


def _ray_audit(data: Path, out: Path, cluster: dict[str, Any], workspace: Path) -> AuditResult:
    """``data`` audited on the session cluster with TEXT_SETTINGS and a shared workspace."""
    return audit(
        data, out, settings=TEXT_SETTINGS, engine="ray", ray_address=cluster["address"], workspace=workspace
    )


def _die_once(texts: Any, settings: Any, marker: str) -> Any:
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return pipeline.text_batch_signals(texts, settings)


def test_text_audit_equals_local_and_survives_a_killed_worker(
    cluster: dict[str, Any],
    text_data: Path,
    text_local: AuditResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first signal batch kills its worker; Ray re-runs it and the audit goes on.
    marker = tmp_path / "killed"
    killer = functools.partial(_die_once, marker=str(marker))
    monkeypatch.setattr(pipeline, "text_batch_signals", killer)
    workspace = tmp_path / "ws"
    first = _ray_audit(text_data, tmp_path / "o1", cluster, workspace)
    assert marker.exists()
    monkeypatch.undo()
    assert first.report["signals"]["computed"] == text_local.report["signals"]["computed"] > 0
    wanted = _findings(text_local)
    assert {f[0] for f in wanted} >= {
        "exact_duplicate",
        "near_duplicate",
        "conflicting_labels",
        "split_leakage",
    }
    assert _findings(first) == wanted
    assert _statuses(first) == _statuses(text_local)

    # A re-run reads the signals (and embeddings) the first run cached.
    again = _ray_audit(text_data, tmp_path / "o2", cluster, workspace)
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["signals"]["cached"] == text_local.report["signals"]["computed"]
    assert report["signals"]["computed"] == 0
    assert _findings(again) == wanted


@pytest.mark.parametrize("verify_chars", [None, 1_200])
def test_on_ray_the_driver_never_reads_the_parquet_content(
    cluster: dict[str, Any],
    text_data: Path,
    text_local: AuditResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    verify_chars: int | None,
) -> None:
    from curata.checks import groups
    from curata.dataset import ParquetContent

    def refuse(*_: Any) -> Any:
        raise AssertionError("the driver read the content")

    # Workers read the text themselves, for the signals and for the near-duplicate verification
    # (its candidates' texts shuffled to one task per partition: one; or several, with a budget of
    # 1,200 characters); the driver only fetches the few rows findings show.
    monkeypatch.setattr(ParquetContent, "batches", refuse)
    monkeypatch.setattr(groups, "_partition_jobs", refuse)
    if verify_chars is not None:
        monkeypatch.setattr(groups, "VERIFY_CHUNK_SHINGLES", verify_chars)
    parts: list[int] = []
    original = groups._partition_pairs

    def count_parts(*args: Any) -> Any:
        jobs = original(*args)
        parts.append(len(jobs))
        return jobs

    monkeypatch.setattr(groups, "_partition_pairs", count_parts)
    # The workers store the signals and embeddings in the workspace: what comes back to the driver
    # is each record's hash and cache position; the LSH shuffle's and the kNN's tasks read the band
    # keys and vectors from the cache's files, so the driver gathers neither.
    returned: list[str] = []
    split_block = pipeline._split_block

    def columns_back(block: pa.Table) -> Any:
        returned.extend(block.column_names)
        return split_block(block)

    monkeypatch.setattr(pipeline, "_split_block", columns_back)
    monkeypatch.setattr(ColumnRows, "to_array", refuse)
    from curata.engine.ray import RayEngine

    read_there: list[str] = []
    stored_of = RayEngine._stored

    def note_stored(self: RayEngine, value: Any) -> Any:
        found = stored_of(self, value)
        read_there.append(found.name if found is not None else "gathered")
        return found

    monkeypatch.setattr(RayEngine, "_stored", note_stored)
    from curata import semantic

    stored_input = semantic._stored_input

    def note_semantic(*args: Any) -> Any:
        found = stored_input(*args)
        read_there.append("semantic" if found is not None else "gathered")
        return found

    monkeypatch.setattr(semantic, "_stored_input", note_semantic)
    result = _ray_audit(text_data, tmp_path / "o", cluster, tmp_path / "ws")
    assert _findings(result) == _findings(text_local)
    assert _statuses(result) == _statuses(text_local)
    assert parts and all((p > 1) == (verify_chars is not None) for p in parts)
    assert set(returned) == {"content_hash", "cache_pos", "part"}
    assert sorted(set(read_there)) == ["band_keys", "embedding", "norm_hash", "semantic"]


@pytest.mark.parametrize("read", ["held", "staged", "staged-other-nodes"])
def test_csv_content_held_by_the_driver_gives_the_same_findings(
    cluster: dict[str, Any], text_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """CSV content held by the driver (small files), or streamed from Parquet copies (large ones):
    read by the workers, or by the driver into the object store when other machines could not
    read the copies."""
    from curata.engine import ray_content
    from curata.io import staging

    csv_path = tmp_path / "data.csv"
    pacsv.write_csv(pq.read_table(text_data), csv_path)
    if read != "held":
        monkeypatch.setattr(staging, "STAGE_MIN_BYTES", 0)
        assert read_dataset(csv_path).content is not None
    reads: list[bool] = []
    workers_read = ray_content.workers_read

    def spy(ray: Any, source: Any) -> bool:
        reads.append(workers_read(ray, source))
        return reads[-1]

    monkeypatch.setattr(ray_content, "workers_read", spy)
    if read == "staged-other-nodes":
        monkeypatch.setattr(ray_content, "multi_node", lambda ray: True)
    checks = dict(settings=AuditSettings(signals=pipeline.SignalSettings(batch_size=40), checks=FAST_CHECKS))
    local = audit(csv_path, tmp_path / "local", workers=1, workspace=tmp_path / "ws1", **checks)
    on_ray = audit(
        csv_path,
        tmp_path / "ray",
        engine="ray",
        ray_address=cluster["address"],
        workspace=tmp_path / "ws2",
        **checks,
    )
    assert on_ray.report["signals"]["computed"] == local.report["signals"]["computed"] > 0
    assert _findings(on_ray) == _findings(local) and len(_findings(local)) > 0
    assert _statuses(on_ray) == _statuses(local)
    assert reads and all(r == (read == "staged") for r in reads)


def _die_on(texts: Any, settings: Any, poison: str) -> Any:
    if poison in texts:
        os.kill(os.getpid(), signal.SIGKILL)  # every try: the batch is lost past the retries
    return pipeline.text_batch_signals(texts, settings)


def test_a_run_lost_past_retries_fails_in_one_line_and_the_rerun_resumes(
    cluster: dict[str, Any],
    text_data: Path,
    text_local: AuditResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from curata.engine.ray import RayEngine

    audit_module = sys.modules[AuditResult.__module__]  # the module: ``curata.audit`` is the function

    texts = pq.read_table(text_data).column("text").to_pylist()
    total = len(texts)
    poison = texts[-8]  # in the last signal batch (40 rows a batch): every earlier batch completes
    monkeypatch.setattr(pipeline, "text_batch_signals", functools.partial(_die_on, poison=poison))
    # The workers store each batch as a part of the cache (16,384 rows a part or more otherwise).
    monkeypatch.setattr(pipeline, "STORE_ROWS", 40)
    monkeypatch.setattr(
        audit_module, "get_engine", lambda *a, **k: RayEngine(cluster["address"], max_retries=0)
    )
    workspace = tmp_path / "ws"
    with pytest.raises(EngineError) as info:
        audit(text_data, tmp_path / "o1", settings=TEXT_SETTINGS, engine="ray", workspace=workspace)
    assert "\n" not in str(info.value) and "re-run" in str(info.value)
    assert not (tmp_path / "o1" / "findings.parquet").exists()
    monkeypatch.undo()
    again = _ray_audit(text_data, tmp_path / "o2", cluster, workspace)
    signals = again.report["signals"]
    # The row groups that came back before the loss were cached by the failed run: only the lost
    # one and the one still running beside it (2 CPUs) are computed again.
    assert signals["cached"] >= total - 2 * 40 and signals["computed"] > 0
    assert signals["cached"] + signals["computed"] == total
    assert _findings(again) == _findings(text_local)
    assert _statuses(again) == _statuses(text_local)  # same counts: nothing lost or repeated


def test_image_audit_equals_local(cluster: dict[str, Any], tmp_path: Path) -> None:
    layout: dict[str, bytes] = {}
    for i in range(24):
        layout[f"{'test' if i % 6 == 0 else 'train'}/{'cat' if i % 2 else 'dog'}/img{i}.png"] = encode(
            pattern_image(i)
        )
    layout["train/cat/copy1.png"] = layout["train/cat/img1.png"]  # exact copy
    layout["test/dog/leak2.png"] = layout["train/dog/img2.png"]  # copy across splits
    layout["train/dog/near3.jpg"] = encode(pattern_image(3).resize((60, 60)), "JPEG", quality=90)
    layout["train/dog/broken.png"] = b"not an image"
    root = write_image_folder(tmp_path / "images", layout)
    settings = AuditSettings(embed=EmbedSettings(encoder="pixels"))
    local = audit(root, tmp_path / "local", settings=settings, workers=1)
    remote = audit(root, tmp_path / "ray", settings=settings, engine="ray", ray_address=cluster["address"])
    wanted = _findings(local)
    assert {f[0] for f in wanted} >= {"exact_duplicate", "near_duplicate", "split_leakage", "corrupt"}
    assert _findings(remote) == wanted
    assert _statuses(remote) == _statuses(local)


# -- command line, Ray Client and errors ------------------------------------------------------------


#: The checks the command-line test runs: signals and LSH buckets, no encoder (keeps it short).
FAST_CHECKS = ("exact_duplicate", "near_duplicate", "conflicting_labels", "split_leakage")


def test_cli_over_ray_client_reads_s3_and_matches_local(
    cluster: dict[str, Any], text_data: Path, text_local: AuditResult, tmp_path: Path
) -> None:
    """``curata audit s3://... --engine ray --ray-address ray://...`` in a fresh process."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="k", aws_secret_access_key="s"
        )
        s3.create_bucket(Bucket="bucket")
        s3.put_object(Bucket="bucket", Key="folder/data.parquet", Body=text_data.read_bytes())
        env.pop("RAY_ADDRESS", None)
        command = [
            str(Path(sys.executable).with_name("curata")),
            "audit",
            "s3://bucket/folder/data.parquet",
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "ray",
            "--ray-address",
            cluster["client"],
            "--checks",
            ",".join(FAST_CHECKS),
            "-q",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(tmp_path / "out" / "findings.parquet")
    result = AuditResult(table, {}, tmp_path / "out", 0)
    assert _findings(result) == {f for f in _findings(text_local) if f[0] in FAST_CHECKS}


def test_unreachable_cluster_is_one_clear_line(text_data: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    command = [
        str(Path(sys.executable).with_name("curata")),
        "audit",
        str(text_data),
        "--out",
        str(tmp_path / "out"),
        "--engine",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "ray start --head" in lines[0]


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from curata.engine.ray import RayEngine

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'curata\[ray\]'"):
        RayEngine("auto")


def test_unknown_engine_and_address_without_ray() -> None:
    with pytest.raises(ConfigError, match="expected local or ray"):
        get_engine("spark")
    with pytest.raises(ConfigError, match="needs --engine ray"):
        get_engine("local", address="auto")
