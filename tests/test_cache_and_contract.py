"""The signal cache (nothing expensive recomputed) and the findings contract tool."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curata.audit import audit

from conftest import edit_words, encode, pattern_image, random_text, write_image_folder, write_parquet

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


@pytest.mark.parametrize(("compact_rows", "index_chunk"), [(7, None), (1_000_000, None), (7, 5)])
def test_partly_cached_signals_are_gathered_in_row_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compact_rows: int, index_chunk: int | None
) -> None:
    """Rows served from the cache and rows computed now end up aligned with their records, gathered
    chunk by chunk (across cache parts and record batches) into a memory-mapped table. With
    ``index_chunk`` the row index (where each row's signals are) is a file-backed array read in
    chunks of that many rows."""
    from curata import outofcore
    from curata.engine import get_engine
    from curata.io import read_dataset
    from curata.signals import pipeline
    from curata.signals.cache import SignalCache
    from curata.signals.pipeline import SignalSettings, compute_signals

    monkeypatch.setattr(pipeline, "COMPACT_ROWS", compact_rows)
    rng = random.Random(12)
    texts = [random_text(rng, 25) for _ in range(40)]
    cache = SignalCache(tmp_path / "ws")
    engine = get_engine("local", 1)
    settings = SignalSettings(batch_size=6)
    compute_signals(
        read_dataset(write_parquet(tmp_path / "a.parquet", [{"text": t} for t in texts[::2]])),
        engine,
        settings,
        cache,
    )
    shuffled = texts[:]
    rng.shuffle(shuffled)
    index = {} if index_chunk is None else {"max_in_memory_rows": 0, "chunk_rows": index_chunk}
    with outofcore.configured(**index):
        mixed = compute_signals(
            read_dataset(write_parquet(tmp_path / "b.parquet", [{"text": t} for t in shuffled])),
            engine,
            settings,
            cache,
        )
    assert (mixed.cached, mixed.computed) == (20, 20)
    if index_chunk is not None:
        # Gathered by the index's chunks: one table chunk per 5 rows.
        assert mixed.table.column("band_keys").num_chunks == 40 // index_chunk
    fresh = compute_signals(
        read_dataset(write_parquet(tmp_path / "b.parquet", [{"text": t} for t in shuffled])), engine, settings
    )
    assert mixed.table.equals(fresh.table)
    # Neither is held in memory: the first is the cache's own files, the second a spill file.
    assert outofcore.is_mapped(mixed.table) and outofcore.is_mapped(fresh.table)
    if index_chunk is None:
        assert mixed.table.column("band_keys").num_chunks == (6 if compact_rows == 7 else 1)


class _FailsAtBatch:
    """Signals of a batch, except that the batch holding ``poison`` raises (a step failing mid-way)."""

    def __init__(self, poison: str) -> None:
        from curata.signals import pipeline

        self.poison = poison
        self.signals = pipeline.text_batch_signals

    def __call__(self, texts: list[str | None], settings: object) -> object:
        if self.poison in texts:
            raise RuntimeError("worker lost")
        return self.signals(texts, settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("compact_rows", [6, 1_000_000])
def test_a_rerun_after_a_failure_mid_step_resumes_from_cached_signals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compact_rows: int
) -> None:
    """Batches finished before a failure are in the cache (every compacted part, and what was left
    when it failed): the re-run computes only the rest and ends with the same signals."""
    from curata.engine import get_engine
    from curata.io import read_dataset
    from curata.signals import pipeline
    from curata.signals.cache import SignalCache

    rng = random.Random(14)
    texts = [f"{i} {random_text(rng, 12)}" for i in range(40)]
    data = write_parquet(tmp_path / "d.parquet", [{"text": t} for t in texts])
    settings = pipeline.SignalSettings(batch_size=6)
    cache = SignalCache(tmp_path / "ws")
    engine = get_engine("local", 1)
    monkeypatch.setattr(pipeline, "COMPACT_ROWS", compact_rows)
    monkeypatch.setattr(pipeline, "text_batch_signals", _FailsAtBatch(texts[27]))
    with pytest.raises(RuntimeError, match="worker lost"):
        pipeline.compute_signals(read_dataset(data), engine, settings, cache)
    monkeypatch.undo()
    again = pipeline.compute_signals(read_dataset(data), engine, settings, cache)
    # Batches 0-3 (rows 0-23) finished before the batch with row 27 failed.
    assert (again.cached, again.computed) == (24, 16)
    fresh = pipeline.compute_signals(read_dataset(data), engine, settings)
    assert again.table.equals(fresh.table)


def test_chunked_verification_finds_the_same_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verifying candidate pairs in many small chunks changes nothing but memory."""
    from curata.checks import groups

    rng = random.Random(13)
    base = [random_text(rng, 60) for _ in range(60)]
    rows = [{"text": t} for t in base]
    rows += [{"text": edit_words(t, rng, 1)} for t in base[:25]]
    data = write_parquet(tmp_path / "d.parquet", rows)
    whole = audit(data, tmp_path / "o1", workers=1, workspace=tmp_path / "ws")
    monkeypatch.setattr(groups, "VERIFY_CHUNK_SHINGLES", 500)
    cand = np.array([[0, 1], [0, 2], [1, 2], [3, 4]])
    chunks = groups.verify_chunks(cand, np.array([300, 300, 300, 10, 10]))
    assert [(c.start, c.stop) for c in chunks] == [(0, 1), (1, 2), (2, 4)]
    chunked = audit(data, tmp_path / "o2", workers=1, workspace=tmp_path / "ws")
    near = [r for r in whole.findings.to_pylist() if r["check"] == "near_duplicate"]
    assert len(near) >= 20
    assert whole.findings.equals(chunked.findings)


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


def test_many_findings_wait_in_a_memory_mapped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check's findings past ``SPILL_FINDINGS_ROWS`` are kept on disk, mapped, and report the same:
    the duplicate checks write theirs chunk by chunk as they make them (chunks of 7 rows here)."""
    from curata import outofcore
    from curata.checks import base as checks_base
    from curata.checks import duplicates

    rng = random.Random(5)
    base = [random_text(rng, 30) for _ in range(20)]
    rows = [{"text": t} for t in base + base[:10] + [edit_words(t, rng, 1) for t in base[10:]]]
    data = write_parquet(tmp_path / "d.parquet", rows)
    held = audit(data, tmp_path / "o1", workers=1, workspace=tmp_path / "ws")
    monkeypatch.setattr(checks_base, "SPILL_FINDINGS_ROWS", 5)
    monkeypatch.setattr(duplicates, "FINDINGS_CHUNK", 7)
    calls: list[list[int]] = []  # the rows of each table written, per spill file
    spill = outofcore.spill_table

    def counting_spill(tables: Any, schema: pa.Schema, folder: Path | None = None) -> pa.Table:
        made: list[int] = []
        calls.append(made)

        def counted() -> Any:
            for table in tables:
                made.append(table.num_rows)
                yield table

        return spill(counted(), schema, folder)

    monkeypatch.setattr(outofcore, "spill_table", counting_spill)
    spilled = audit(data, tmp_path / "o2", workers=1, workspace=tmp_path / "ws")
    # Exact and near duplicates (10 findings each) were streamed to their files 7 rows at a time.
    assert sorted(c for c in calls if len(c) > 1) == [[7, 3], [7, 3]]
    assert held.findings.num_rows >= 20 and not outofcore.is_mapped(held.findings)
    assert outofcore.is_mapped(spilled.findings)
    assert spilled.findings.equals(held.findings)
    assert spilled.report["checks"] == {
        name: {**entry, "seconds": spilled.report["checks"][name]["seconds"]}
        for name, entry in held.report["checks"].items()
    }
    assert pq.read_table(tmp_path / "o2" / "findings.parquet").equals(held.findings)
    assert not any((tmp_path / "ws" / "tmp").iterdir())  # the spill files are already unlinked


def _labelled_rows(seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    base = [random_text(rng, 25) for _ in range(30)]
    texts = base + base[:8] + [edit_words(t, rng, 1) for t in base[8:16]] + ["", "   "]
    return [
        {
            "id": f"r{i % 50}",  # a few ids repeat
            "text": t,
            "label": rng.choice(["cat", "dog", None]),
            "split": rng.choice(["train", "test", "validation"]),
        }
        for i, t in enumerate(texts)
    ]


def test_map_to_file_keeps_values_and_moves_every_column_to_a_mapped_file(tmp_path: Path) -> None:
    from curata import outofcore
    from curata.dataset import map_to_file
    from curata.io import read_dataset

    rows = [{**r, "id": f"k{i}"} for i, r in enumerate(_labelled_rows(1))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=10)
    ds = read_dataset(tmp_path / "d.parquet", id_column="id", label_column="label", split_column="split")
    mapped = map_to_file(ds, tmp_path / "tmp")
    assert mapped.table.equals(ds.table) and mapped.table.schema.equals(ds.table.schema)
    assert mapped.record_ids.equals(ds.record_ids) and mapped.num_rows == ds.num_rows
    assert mapped.labels() == ds.labels() and mapped.splits() == ds.splits()
    assert not outofcore.is_mapped(ds.table) and not outofcore.is_mapped(ds.record_ids)
    assert outofcore.is_mapped(mapped.table) and outofcore.is_mapped(mapped.record_ids)
    # The id column holds the record ids themselves (one copy), as before the move.
    assert mapped.table.column("id").chunk(0).buffers()[2].address == mapped.record_ids.buffers()[2].address
    assert not any((tmp_path / "tmp").iterdir())  # unlinked at once


def test_audit_over_mapped_records_equals_the_in_memory_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from curata import dataset as dataset_module

    audit_module = importlib.import_module("curata.audit")  # the module (curata.audit is the function)

    data = write_parquet(tmp_path / "d.parquet", _labelled_rows(2))
    held = audit(data, tmp_path / "o1", workers=1, workspace=tmp_path / "ws")
    moved: list[int] = []
    original = dataset_module.map_to_file

    def counted(ds: Any, folder: Any) -> Any:
        moved.append(ds.num_rows)
        return original(ds, folder)

    monkeypatch.setattr(audit_module, "MAP_RECORDS_ROWS", 1)
    monkeypatch.setattr(audit_module, "map_to_file", counted)
    mapped = audit(data, tmp_path / "o2", workers=1, workspace=tmp_path / "ws")
    assert moved == [len(_labelled_rows(2))]
    ran = {k for k, v in held.report["checks"].items() if v["status"] == "ok"}
    assert {"duplicate_id", "exact_duplicate", "near_duplicate", "conflicting_labels", "split_leakage"} <= ran
    assert held.findings.num_rows > 0 and mapped.findings.equals(held.findings)
    assert mapped.report["checks"] == {
        name: {**entry, "seconds": mapped.report["checks"][name]["seconds"]}
        for name, entry in held.report["checks"].items()
    }


@pytest.mark.parametrize("spilled", [False, True])
def test_sorted_cached_hashes_equal_a_stable_sort(spilled: bool) -> None:
    """The cache's lookup table (hashes ascending, with the row each came from) is a radix pass
    plus small sorts by chunks; it equals a stable sort of every hash, repeated hashes and a
    crowded bucket included, in memory and file-backed."""
    from curata import outofcore
    from curata.signals.pipeline import hash_array, hash_column, hashes_of, sorted_hashes

    rng = np.random.default_rng(5)
    digests = [rng.bytes(16) for _ in range(300)]
    digests += digests[:40]  # repeated content
    digests += [b"\x07\x07" + rng.bytes(14) for _ in range(60)]  # one crowded bucket
    order = rng.permutation(len(digests))
    values = hash_array([digests[i] for i in order])
    column = pa.chunked_array([hash_column(values[a : a + 37]) for a in range(0, len(values), 37)])
    settings = {"max_in_memory_rows": 0, "chunk_rows": 11} if spilled else {}
    with outofcore.configured(**settings):
        got_sorted, got_rows = sorted_hashes(column)
    assert isinstance(got_sorted, np.memmap) == spilled and isinstance(got_rows, np.memmap) == spilled
    want_rows = np.argsort(hashes_of(column), kind="stable")
    assert np.array_equal(got_rows, want_rows)
    assert np.array_equal(got_sorted, hashes_of(column)[want_rows])
