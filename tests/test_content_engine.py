"""The pipeline's path for engines whose workers read the content (``ContentEngine``), without Ray.

An in-process engine reads the source as Ray's workers do (Parquet by row groups, or the chunks the
driver holds) and runs the worker-side function; its signals must equal the local engine's, with
and without cache hits.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curata import outofcore
from curata.engine import LocalEngine, ray_content
from curata.engine.base import ContentEngine, ContentSource, Finish
from curata.io import read_dataset
from curata.signals import pipeline
from curata.signals.cache import SignalCache
from curata.signals.pipeline import SignalSettings, compute_signals, signals_of_content

from conftest import edit_words, random_text


class ReadingEngine(LocalEngine):
    """Reads the content itself, a ``batch_size`` slice at a time, and records what it read."""

    def __init__(self, tasks: int = 2, shared: bool = True) -> None:
        super().__init__(workers=1)
        self.read: list[str] = []
        self.tasks = tasks  # map tasks and reduce tasks (bundles of partitions) of map_partitions
        self.shared = shared  # whether the "workers" share the workspace (they store signals)

    def reaches(self, folder: Path) -> bool:
        return self.shared

    def map_content(
        self,
        source: ContentSource,
        fn: Any,
        *,
        args: tuple[Any, ...],
        batch_size: int,
        description: str,
        finish: Finish | None = None,
    ) -> Iterator[pa.Table]:
        outputs = self._first_step(source, fn, args, batch_size)
        if finish is None:
            yield from outputs
            return
        # The second step over fn's outputs in batches of finish.rows rows, as Ray Data forms them.
        held: list[pa.Table] = []
        for table in outputs:
            held.append(table)
            while sum(t.num_rows for t in held) >= finish.rows:
                whole = pa.concat_tables(held, promote_options="default")
                held = [whole.slice(finish.rows)]
                yield finish.fn(whole.slice(0, finish.rows), *finish.args)
        if held and sum(t.num_rows for t in held):
            yield finish.fn(pa.concat_tables(held, promote_options="default"), *finish.args)

    def _first_step(
        self, source: ContentSource, fn: Any, args: tuple[Any, ...], batch_size: int
    ) -> Iterator[pa.Table]:
        if source.files:
            self.read.append("files")
            chunks = [
                pq.ParquetFile(f).read_row_group(g, columns=[source.column]).column(0).combine_chunks()
                for f in source.files
                for g in range(pq.ParquetFile(f).metadata.num_row_groups)
            ]
        else:
            self.read.append("chunks")
            chunks = list(source.chunks)
        for chunk in chunks:
            for start in range(0, len(chunk), batch_size):
                yield fn(pa.table({"content": chunk.slice(start, batch_size)}), *args)

    def map_partitions(
        self,
        source: ContentSource,
        rows: np.ndarray,
        part: np.ndarray,
        jobs: Any,
        fn: Any,
        *,
        args: tuple[Any, ...],
        description: str,
    ) -> Iterator[Any]:
        """The Ray engine's map and reduce tasks, run here in turn (the object store: none)."""
        self.read.append("partitions")
        parts = self.parts = len(jobs)
        bundle_of = ray_content.bundle_partitions(part, parts, self.tasks)
        bundles = int(bundle_of.max()) + 1
        pieces = list(ray_content.content_pieces(_NoStore, source, rows))
        mapped = [
            ray_content.split_pieces(
                [(first, piece) for first, piece, _ in run],
                *(rows, part, bundle_of, bundles),
                *(block for _, piece, block in run if piece is None),
            )
            for run in ray_content.group_pieces(pieces, self.tasks)
        ]
        outputs = [m if bundles > 1 else [m] for m in mapped]
        for b in range(bundles):
            own = [(int(p), jobs[int(p)]) for p in np.flatnonzero(bundle_of == b)]
            yield from ray_content.run_bundle(fn, own, args, part, *(out[b] for out in outputs))


class _NoStore:
    """Stands in for ``ray``: ``put`` hands the value back."""

    @staticmethod
    def put(value: Any) -> Any:
        return value

    @staticmethod
    def nodes() -> list[dict[str, Any]]:
        return [{"Alive": True}]


def _write(path: Path, table: pa.Table, row_group_size: int) -> Path:
    """``table`` as Parquet in row groups of ``row_group_size`` rows, or as CSV, by ``path``'s suffix."""
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=row_group_size)
    else:
        pacsv.write_csv(table, path)
    return path


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    texts = [random_text(rng, 30) for _ in range(n)]
    texts[5] = texts[2]  # an exact duplicate
    texts[9] = None  # type: ignore[call-overload]
    return [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("shared", [True, False])
def test_engine_read_signals_equal_local_with_and_without_cache_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, shared: bool
) -> None:
    """Signals computed by an engine's workers equal the local engine's: stored in the cache by the
    workers themselves (a shared workspace; parts of 20 rows, which end inside later blocks of 16),
    or sent back and stored here."""
    monkeypatch.setattr(pipeline, "STORE_ROWS", 20)
    settings = SignalSettings(batch_size=16)
    rows = _rows(90, seed=3)
    dataset = read_dataset(_write(tmp_path / f"data.{fmt}", pa.Table.from_pylist(rows), 25))
    engine = ReadingEngine(shared=shared)
    assert isinstance(engine, ContentEngine) and not isinstance(LocalEngine(1), ContentEngine)

    want = compute_signals(dataset, LocalEngine(workers=1), settings)
    cache = SignalCache(tmp_path / "ws")
    first = compute_signals(dataset, engine, settings, cache)
    assert engine.read == ["files" if fmt == "parquet" else "chunks"]
    assert (first.computed, first.cached) == (90, 0)
    assert first.table.equals(want.table)
    assert np.array_equal(first.content_hashes, want.content_hashes)
    # The table is the cache's parts, in order: 5 parts of 20 rows or less when the workers store.
    parts = [pa.ipc.open_file(path).read_all() for path, _ in first.files]
    assert [rows for _, rows in first.files] == ([20, 20, 20, 20, 10] if shared else [90])
    assert [len(p) for p in parts] == [rows for _, rows in first.files]
    assert pa.concat_tables(parts).drop_columns(["content_hash"]).equals(want.table)
    hashes = pipeline.hashes_of(pa.concat_tables(parts).column("content_hash"))
    assert np.array_equal(hashes, want.content_hashes)
    assert all(Path(path).parent == cache.folder(settings.fingerprint("text")) for path, _ in first.files)

    # A larger dataset holding the first: its rows come from the cache, only new ones are computed.
    more = _rows(90, seed=3) + _rows(40, seed=4)
    bigger = tmp_path / f"bigger.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(more), bigger, row_group_size=25)
    else:
        pacsv.write_csv(pa.Table.from_pylist(more), bigger)
    grown = read_dataset(bigger)
    with outofcore.configured(chunk_rows=50):
        second = compute_signals(grown, engine, settings, cache)
    # 90 old rows, and the new rows' missing text, whose signals the cache already holds.
    assert second.cached == 91 and second.computed == 39
    assert second.table.equals(compute_signals(grown, LocalEngine(workers=1), settings).table)
    if not shared:
        assert second.files == ()  # gathered into a temporary file of this process
        return
    # The workers put the rows in order themselves (tasks of 50 rows), into files of a run folder
    # that goes with the signals.
    assert [rows for _, rows in second.files] == [50, 50, 30]
    gathered = pa.concat_tables(pa.ipc.open_file(path).read_all() for path, _ in second.files)
    assert gathered.equals(second.table)
    folder = Path(second.files[0][0]).parent
    assert folder.parent == cache.temp_folder() and folder.is_dir()
    del second, gathered
    gc.collect()
    assert not folder.exists()


def test_worker_side_function_skips_known_content_and_keeps_one_row_per_record() -> None:
    settings = SignalSettings()
    texts = ["alpha beta gamma", "delta epsilon", None, "alpha beta gamma"]
    everything = signals_of_content(
        pa.table({"content": texts}),
        "text",
        ".",
        pipeline.text_batch_signals,
        (settings.minhash,),
        np.empty(0, "S16"),
    )
    assert everything.column("cache_pos").to_pylist() == [-1] * 4
    known = np.sort(pipeline.hashes_of(everything.column("content_hash"))[[1]])
    partial = signals_of_content(
        pa.table({"content": texts}), "text", ".", pipeline.text_batch_signals, (settings.minhash,), known
    )
    assert partial.column("cache_pos").to_pylist() == [-1, 0, -1, -1]
    assert partial.column("content_hash").equals(everything.column("content_hash"))
    assert partial.column("norm_hash").null_count == 1 and partial.column("norm_hash")[1].as_py() is None
    computed = pa.array([True, False, True, True])
    kept = partial.filter(computed)
    assert kept.column("band_keys").equals(everything.filter(computed).column("band_keys"))
    # Nothing to compute: only the hashes come back.
    none_left = signals_of_content(
        pa.table({"content": ["delta epsilon"]}),
        "text",
        ".",
        pipeline.text_batch_signals,
        (settings.minhash,),
        known,
    )
    assert none_left.column_names == ["content_hash", "cache_pos"]
    assert none_left.column("cache_pos").to_pylist() == [0]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("budget", [10**9, 1_500])
@pytest.mark.parametrize("tasks", [1, 3])
def test_verification_by_the_engine_reading_texts_equals_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, budget: int, tasks: int
) -> None:
    """Near-duplicate verification where the engine's workers read the candidates' texts and shuffle
    them to their partitions (one partition; several; in one map and one reduce task, or in
    several of each, a reduce task running several partitions) keeps exactly the local engine's
    pairs."""
    from curata.checks import groups
    from curata.signals.text import MinHashSettings, normalize_text

    monkeypatch.setattr(groups, "VERIFY_CHUNK_SHINGLES", budget)
    rng = random.Random(7)
    base = [random_text(rng, 30) for _ in range(24)]
    texts: list[str | None] = [*base, *(edit_words(t, rng, 1) for t in base[:16]), None, *base[16:20]]
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    where = {i: k for k, i in enumerate(order)}  # original index -> row
    # Components of two triangles: a text, its edited copy (kept) and an unrelated text (rejected)
    # that two triangles share; the empty text and the exact copies are no candidates.
    pairs = []
    for i in range(16):
        a, b, c = where[i], where[24 + i], where[16 + i // 2]
        pairs += [(a, b), (a, c), (b, c)]
    cand = np.array(pairs, dtype=np.int64)
    rows = np.unique(cand)
    local = np.searchsorted(rows, cand)
    n_chars = np.array([len(normalize_text(texts[r] or "")) for r in rows], dtype=np.int64)
    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts})
    dataset = read_dataset(_write(tmp_path / f"data.{fmt}", table, 9))
    settings = MinHashSettings()

    want_pairs, want_sims = groups.verify_text_pairs(dataset, rows, local, n_chars, settings, LocalEngine(1))
    engine = ReadingEngine(tasks)
    got_pairs, got_sims = groups.verify_text_pairs(dataset, rows, local, n_chars, settings, engine)
    assert engine.read == ["partitions"] and (engine.parts > 1) == (budget < 10**9)
    assert np.array_equal(got_pairs, want_pairs) and np.array_equal(got_sims, want_sims)
    kept = {tuple(sorted(p)) for p in got_pairs.tolist()}
    assert {tuple(sorted((where[i], where[24 + i]))) for i in range(16)} <= kept
    assert 16 <= len(kept) < len(pairs)  # the unrelated third is rejected (mostly)
    # Only the pieces (row groups, or blocks of the chunks) holding a candidate are read.
    source = pipeline.content_source(dataset)
    wanted = list(ray_content.content_pieces(_NoStore, source, np.array([0, 3, 19])))
    assert [first for first, _, _ in wanted] == ([0, 18] if fmt == "parquet" else [0])
