"""The out-of-core path of the local engine: DuckDB results equal the in-memory ones, in bounded chunks."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curata import outofcore
from curata.checks import groups
from curata.checks.base import Context, FindingsBuilder
from curata.checks.duplicates import ExactDuplicateCheck, NearDuplicateCheck
from curata.checks.groups import exact_groups, shared_exact, shared_near, shared_rank
from curata.engine import LocalEngine
from curata.errors import ConfigError
from curata.io import read_dataset
from curata.lsh import candidate_pairs, connected_labels
from curata.signals.pipeline import Signals, SignalSettings, compute_signals, hash_column

from conftest import edit_words, random_text, write_parquet

FORCE_DUCKDB = {"max_in_memory_keys": 0, "max_in_memory_rows": 0}


def reference_pairs(keys: np.ndarray, max_bucket: int) -> np.ndarray:
    """Candidate pairs by the definition: per band, all pairs of a bucket, or star + chain when big."""
    out: set[tuple[int, int]] = set()
    for b in range(keys.shape[1]):
        buckets: dict[object, list[int]] = {}
        for row, k in enumerate(keys[:, b].tolist()):
            buckets.setdefault(k, []).append(row)
        for rows in buckets.values():
            if len(rows) <= max_bucket:
                out.update(itertools.combinations(rows, 2))
            else:
                out.update((rows[0], r) for r in rows[1:])
                out.update(itertools.pairwise(rows))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 2)


def duckdb_pairs(
    keys: np.ndarray, max_bucket: int, chunk_rows: int
) -> tuple[np.ndarray, outofcore.ChunkStats]:
    with outofcore.configured(chunk_rows=chunk_rows, **FORCE_DUCKDB) as stats:
        pairs = candidate_pairs(keys, max_bucket)
    assert stats.duckdb_calls == 1
    return pairs, stats


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int64, np.uint8, np.int32])
def test_duckdb_candidate_pairs_equal_numpy_on_random_keys(dtype: type) -> None:
    rng = np.random.default_rng(abs(hash(np.dtype(dtype).str)) % 1000)
    for _ in range(3):
        n, bands = int(rng.integers(2, 300)), int(rng.integers(1, 5))
        keys = rng.integers(0, int(rng.integers(2, 40)), size=(n, bands)).astype(dtype)
        max_bucket = int(rng.integers(2, 10))
        expected = reference_pairs(keys, max_bucket)
        assert np.array_equal(candidate_pairs(keys, max_bucket), expected)
        got, _ = duckdb_pairs(keys, max_bucket, int(rng.integers(1, 60)))
        assert np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("name", "keys", "max_bucket"),
    [
        ("one giant bucket", np.zeros((500, 2), np.uint32), 200),
        ("all distinct", np.arange(600, dtype=np.uint32).reshape(300, 2), 200),
        ("bucket of exactly max_bucket", np.repeat(np.arange(3, dtype=np.uint32), 7)[:, None], 7),
        ("bucket of max_bucket + 1", np.repeat(np.arange(3, dtype=np.uint32), 8)[:, None], 7),
        ("two rows", np.array([[5, 1], [5, 2]], np.uint64), 2),
        ("extreme uint64", np.array([[2**64 - 1], [0], [2**64 - 1], [2**63]], np.uint64), 200),
        ("negative int64", np.array([[-(2**63)], [-1], [-(2**63)], [-1], [7]], np.int64), 2),
        ("same key in every band", np.full((40, 5), 3, np.uint32), 3),
    ],
)
def test_duckdb_candidate_pairs_on_adversarial_keys(name: str, keys: np.ndarray, max_bucket: int) -> None:
    expected = reference_pairs(keys, max_bucket)
    assert np.array_equal(candidate_pairs(keys, max_bucket), expected), name
    for chunk_rows in (1, 3, 64, 10_000):  # buckets cut by chunk ends in every possible place
        got, _ = duckdb_pairs(keys, max_bucket, chunk_rows)
        assert np.array_equal(got, expected), (name, chunk_rows)


def test_chunked_path_holds_a_bounded_number_of_rows() -> None:
    """On 30,000 rows x 8 bands (240,000 keys, ~90,000 pairs), no batch exceeds the chunk bound."""
    rng = np.random.default_rng(5)
    n, bands, chunk, max_bucket = 30_000, 8, 2_000, 20
    keys = rng.integers(0, 2**32, size=(n, bands), dtype=np.uint64).astype(np.uint32)
    keys[1::2] = keys[0::2]  # every other row repeats its predecessor in every band
    keys[:300, 3] = 7  # and one big bucket
    expected = candidate_pairs(keys, max_bucket)
    got, stats = duckdb_pairs(keys, max_bucket, chunk)
    assert np.array_equal(got, expected)
    assert len(expected) > 15_000
    # Carried rows of one small bucket, or the pairs of one more bucket, may top up a chunk.
    assert stats.max_rows <= 2 * (chunk + max_bucket) + max_bucket**2
    assert stats.chunks >= n * bands // chunk


def test_threshold_picks_the_path() -> None:
    keys = np.zeros((10, 2), np.uint32)
    with outofcore.configured(max_in_memory_keys=20) as stats:
        candidate_pairs(keys)
    assert stats.duckdb_calls == 0
    with outofcore.configured(max_in_memory_keys=19) as stats:
        candidate_pairs(keys)
    assert stats.duckdb_calls == 1
    with outofcore.configured(max_in_memory_keys=0) as stats:  # float keys stay in numpy
        candidate_pairs(keys.astype(np.float64))
    assert stats.duckdb_calls == 0


def test_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chunk_rows"):
        outofcore.OutOfCoreSettings(chunk_rows=0)
    with pytest.raises(ConfigError, match="memory_limit_mib"):
        outofcore.OutOfCoreSettings(memory_limit_mib=1)
    keys = np.zeros((5, 1), np.uint32)
    with outofcore.configured(temp_directory=tmp_path / "spill", **FORCE_DUCKDB):
        candidate_pairs(keys)
    assert (tmp_path / "spill").is_dir() and not any((tmp_path / "spill").iterdir())  # cleaned up


def _signals(hashes: np.ndarray, n_chars: np.ndarray, cut: int) -> Signals:
    col = pa.chunked_array([hash_column(hashes[:cut]), hash_column(hashes[cut:])])
    chars = pa.chunked_array([pa.array(n_chars[:cut], pa.int32()), pa.array(n_chars[cut:], pa.int32())])
    return Signals(pa.table({"norm_hash": col, "n_chars": chars}), "text", len(hashes), 0)


def reference_groups(hashes: np.ndarray, valid: np.ndarray, rank: np.ndarray) -> np.ndarray:
    best: dict[bytes, int] = {}
    for row in np.argsort(rank):
        if valid[row]:
            best.setdefault(bytes(hashes[row]), int(row))
    return np.array([best[bytes(h)] if v else -1 for h, v in zip(hashes, valid, strict=True)], np.int64)


def test_duckdb_exact_groups_equal_in_memory() -> None:
    rng = np.random.default_rng(2)
    for trial in range(4):
        n = int(rng.integers(2, 400))
        distinct = rng.integers(0, 256, size=(int(rng.integers(1, 50)), 16), dtype=np.uint8)
        hashes = np.frombuffer(distinct[rng.integers(0, len(distinct), n)].tobytes(), dtype="S16")
        n_chars = rng.integers(0, 3, n).astype(np.int32)  # a third empty: not comparable
        signals = _signals(hashes, n_chars, int(rng.integers(1, n)))
        rank = rng.permutation(n).astype(np.int64)
        expected = reference_groups(hashes, n_chars > 0, rank)
        assert np.array_equal(exact_groups(signals, rank).group, expected)
        with outofcore.configured(chunk_rows=int(rng.integers(1, 50)), **FORCE_DUCKDB) as stats:
            got = exact_groups(signals, rank).group
        assert stats.duckdb_calls == 1, trial
        assert np.array_equal(got, expected), trial
        assert stats.max_rows <= max(50, n)


def test_connected_labels_are_the_components_lowest_node() -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(3)
    for _ in range(20):
        n, m = int(rng.integers(1, 300)), int(rng.integers(0, 300))
        pairs = rng.integers(0, n, size=(m, 2))
        labels = connected_labels(n, pairs)
        graph = coo_matrix((np.ones(m), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, ref = connected_components(graph, directed=False)
        assert len(set(zip(labels.tolist(), ref.tolist(), strict=True))) == len(set(ref.tolist()))
        for label in np.unique(labels):
            assert label == np.flatnonzero(labels == label).min()
    with pytest.raises(ConfigError):
        connected_labels(3, np.array([[0, 3]]))


def _context(tmp_path: Path, seed: int) -> Context:
    """A small text set with exact copies and near copies scattered among unrelated texts."""
    rng = random.Random(seed)
    base = [random_text(rng, 40) for _ in range(120)]
    texts = base + [edit_words(t, rng, 1) for t in base[:40]] + [t.upper() for t in base[30:50]]
    texts += [edit_words(t, rng, 2) for t in base[:15]]
    rng.shuffle(texts)
    rows = [{"id": f"r{i}", "text": t, "split": rng.choice(["train", "test"])} for i, t in enumerate(texts)]
    data = read_dataset(write_parquet(tmp_path / f"d{seed}.parquet", rows))
    engine = LocalEngine(workers=1)
    settings = SignalSettings()
    signals = compute_signals(data, engine, settings)
    return Context(
        dataset=data,
        signals={"data": signals},
        settings={"signals": settings, "engine": engine, "workspace": tmp_path / "ws"},
    )


def reference_exact_findings(context: Context) -> pa.Table:
    """The exact-duplicate findings built one row at a time (the former implementation)."""
    exact = shared_exact(context)
    ids = context.dataset.record_ids.to_pylist()
    sizes = np.bincount(exact.group[exact.group >= 0], minlength=len(exact.group))
    out = FindingsBuilder("exact_duplicate")
    for row in np.flatnonzero((exact.group >= 0) & (exact.group != np.arange(len(exact.group)))):
        rep = int(exact.group[row])
        out.add(
            ids[row],
            related_id=ids[rep],
            group_id=f"exact-{exact.key(rep)[:16]}",
            score=1.0,
            severity="warning",
            message=f"identical text to {ids[rep]} ({sizes[rep]} copies in this group)",
            evidence={"group_size": int(sizes[rep])},
        )
    return out.table()


def reference_near_findings(context: Context) -> pa.Table:
    """The near-duplicate findings built one row at a time (the former implementation)."""
    from curata.checks.base import clusters_from_pairs

    near = shared_near(context)
    ids = context.dataset.record_ids.to_pylist()
    n = context.dataset.num_rows
    labels = clusters_from_pairs(n, near.pairs)
    best: dict[int, float] = {}
    direct: dict[tuple[int, int], float] = {}
    for (a, b), sim in zip(near.pairs.tolist(), near.similarity.tolist(), strict=True):
        best[a], best[b] = max(best.get(a, 0.0), sim), max(best.get(b, 0.0), sim)
        direct[(a, b)] = sim
    by_label: dict[int, list[int]] = {}
    for row in np.unique(near.pairs).tolist():
        by_label.setdefault(int(labels[row]), []).append(row)
    rank = shared_rank(context)
    found: list[tuple[int, int, list[int]]] = []
    for members in by_label.values():
        members.sort(key=lambda r: rank[r])
        found.extend((row, members[0], members) for row in members[1:])
    out = FindingsBuilder("near_duplicate")
    for row, rep, members in sorted(found):  # one finding per member, in row order
        sim = direct.get((min(rep, row), max(rep, row)), best[row])
        out.add(
            ids[row],
            related_id=ids[rep],
            group_id=f"near-{ids[rep]}",
            score=sim,
            severity="warning",
            message=f"near duplicate of {ids[rep]} (Jaccard {sim:.2f}, cluster of {len(members)})",
            evidence={"similarity": round(sim, 4), "cluster_size": len(members)},
        )
    return out.table()


def test_duplicate_findings_equal_the_row_by_row_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import curata.checks.duplicates as duplicates

    monkeypatch.setattr(duplicates, "FINDINGS_CHUNK", 7)  # many chunks
    context = _context(tmp_path, 1)
    exact = ExactDuplicateCheck().run(context)
    near = NearDuplicateCheck().run(context)
    assert exact.num_rows >= 15 and near.num_rows >= 30
    assert exact.equals(reference_exact_findings(context))
    assert near.equals(reference_near_findings(context))
    for row in near.to_pylist()[:5]:
        assert json.loads(row["evidence"])["cluster_size"] >= 2


def test_out_of_core_audit_path_finds_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything out of core (DuckDB groups and buckets, spilled verification partitions, a giant
    component verified on its own) gives the in-memory near pairs and exact groups."""
    context = _context(tmp_path, 2)
    exact = shared_exact(context).group
    near = shared_near(context)
    assert len(near.pairs) >= 30
    for budget in (2_000, 300):  # many partitions; then most components larger than one
        monkeypatch.setattr(groups, "VERIFY_CHUNK_SHINGLES", budget)
        monkeypatch.setattr(
            outofcore, "_DEFAULTS", outofcore.OutOfCoreSettings(chunk_rows=16, **FORCE_DUCKDB)
        )
        other = _context(tmp_path, 2)
        assert np.array_equal(shared_exact(other).group, exact)
        again = shared_near(other)
        assert np.array_equal(again.pairs, near.pairs)
        assert np.array_equal(again.similarity, near.similarity)
    assert not any((tmp_path / "ws" / "tmp").iterdir())  # spill files removed


def test_spilled_array_keeps_its_rows_after_release(tmp_path: Path) -> None:
    with outofcore.configured(temp_directory=tmp_path):
        arr = outofcore.spill_array((5_000, 3), np.uint32)
    assert not any(tmp_path.iterdir())  # the backing file is unlinked at once
    arr[:] = np.arange(15_000, dtype=np.uint32).reshape(5_000, 3)
    for lo in range(0, 5_000, 1_000):
        outofcore.release_rows(arr, lo, lo + 1_000)
        outofcore.release_rows(np.asarray(arr)[lo:], 0, 10)  # a view of it too
    assert np.array_equal(arr, np.arange(15_000, dtype=np.uint32).reshape(5_000, 3))
    plain = np.ones((4, 2))
    outofcore.release_rows(plain, 0, 4)  # an ordinary array: nothing happens
    assert plain.sum() == 8


def test_the_command_line_picks_a_memory_pool_that_returns_freed_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow as pa

    before = pa.default_memory_pool()
    try:
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
        assert outofcore.use_returning_memory_pool() in ("jemalloc", "system")
        assert pa.default_memory_pool().backend_name in ("jemalloc", "system")
        pa.set_memory_pool(before)
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", before.backend_name)
        assert outofcore.use_returning_memory_pool() == before.backend_name  # the user's choice stays
    finally:
        pa.set_memory_pool(before)


def test_distinct_count_in_memory_and_by_duckdb_agree(tmp_path: Path) -> None:
    """Distinct values (null counted once) alike below and above ``chunk_rows`` (DuckDB's path)."""
    rng = np.random.default_rng(4)
    values = pa.chunked_array(
        [pa.array([f"r{v}" for v in rng.integers(0, 300, 500)] + [None, ""]), pa.array(["r1", "x"])]
    )
    want = len({v for v in values.to_pylist()})
    with outofcore.configured(temp_directory=tmp_path):
        assert outofcore.distinct_count(values) == want
        assert outofcore.distinct_count(values.filter(pc.is_valid(values))) == want - 1
    with outofcore.configured(temp_directory=tmp_path, chunk_rows=10):
        assert outofcore.distinct_count(values) == want
        assert outofcore.distinct_count(values.filter(pc.is_valid(values))) == want - 1
        assert outofcore.distinct_count(pa.chunked_array([], pa.string())) == 0
    assert not any(tmp_path.iterdir())  # DuckDB's folder is gone


def _resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_a_mapped_table_holds_pages_only_while_they_are_read(tmp_path: Path) -> None:
    """An Arrow file read memory-mapped costs no memory until used, and hands its pages back."""
    import gc

    rows = 4_000_000
    table = pa.table({"k": np.arange(rows, dtype=np.int64), "v": np.ones(rows, np.float32)})
    path = tmp_path / "t.arrow"
    outofcore.write_arrow_file(path, [table], table.schema)
    mapped = outofcore.map_arrow_file(path)
    assert _resident_kib(path) < 1024
    assert outofcore.is_mapped(mapped) and not outofcore.is_mapped(table)
    assert mapped.equals(table)
    del table
    outofcore.release_mapped()
    assert _resident_kib(path) < 1024
    total = int(np.asarray(mapped.column("k").to_numpy()).sum())
    assert total == rows * (rows - 1) // 2
    assert _resident_kib(path) > 24_000  # the 32 MB column was read in
    outofcore.release(mapped.column("k"))
    assert _resident_kib(path) < 1024
    assert int(np.asarray(mapped.column("k").to_numpy()).sum()) == total  # still readable
    registered = len(outofcore._MAPPINGS)
    del mapped
    gc.collect()
    assert len(outofcore._MAPPINGS) == registered - 1  # the mapping left the registry with its table
    assert _resident_kib(path) == 0


def _labelled_context(tmp_path: Path, seed: int, name: str) -> Context:
    """Exact and near copies with labels and splits drawn at random (conflicts and leakage)."""
    rng = random.Random(seed)
    base = [random_text(rng, 30) for _ in range(80)]
    texts = base + [edit_words(t, rng, 1) for t in base[:30]] + [t.upper() for t in base[20:45]] + ["", ""]
    rng.shuffle(texts)
    rows = [
        {"id": f"r{i}", "text": t, "label": rng.choice("abc"), "split": rng.choice(["train", "val", "test"])}
        for i, t in enumerate(texts)
    ]
    data = read_dataset(write_parquet(tmp_path / f"{name}.parquet", rows))
    engine = LocalEngine(workers=1)
    settings = SignalSettings()
    return Context(
        dataset=data,
        signals={"data": compute_signals(data, engine, settings)},
        settings={"signals": settings, "engine": engine, "workspace": tmp_path / name},
    )


def reference_clusters(context: Context) -> np.ndarray:
    """A cluster per row as the former whole-dataset implementation made it: components over
    every row, each labelled by its member of lowest rank (-1 for rows left out)."""
    exact = np.asarray(shared_exact(context).group)
    near = shared_near(context)
    n = len(exact)
    rows = np.arange(n)
    members = exact >= 0
    pairs = np.stack([exact[members], rows[members]], axis=1)
    pairs = np.concatenate([pairs[pairs[:, 0] != pairs[:, 1]], near.pairs.reshape(-1, 2)])
    labels = connected_labels(n, pairs)
    rank = np.asarray(shared_rank(context))
    best = np.full(n, n, dtype=np.int64)
    np.minimum.at(best, labels, rank)
    order = np.argsort(rank, kind="stable")
    return np.where(members, order[np.minimum(best[labels], n - 1)], -1)


def test_representative_rank_in_chunks_is_the_split_then_row_order(tmp_path: Path) -> None:
    rng = random.Random(4)
    splits = [rng.choice(["train", "validation", "test", "dev", None, "holdout"]) for _ in range(257)]
    rows = [{"id": f"r{i}", "text": "x", "split": s} for i, s in enumerate(splits)]
    data = read_dataset(write_parquet(tmp_path / "s.parquet", rows))
    order = sorted(
        range(len(rows)),
        key=lambda r: (
            groups.SPLIT_ORDER.get(data.splits()[r] or "", 1) if data.splits()[r] is not None else 3,
            r,
        ),
    )
    expected = np.empty(len(rows), np.int64)
    expected[order] = np.arange(len(rows))
    assert np.array_equal(groups.representative_rank(data), expected)
    with outofcore.configured(temp_directory=tmp_path / "t", chunk_rows=10, **FORCE_DUCKDB):
        spilled = groups.representative_rank(data)
    assert isinstance(spilled, np.memmap)
    assert np.array_equal(spilled, expected)


def test_cross_record_index_spilled_in_chunks_equals_the_in_memory_one(tmp_path: Path) -> None:
    """Past ``max_in_memory_rows`` the per-record arrays (rank, valid flags, exact groups,
    representatives) are file-backed and made in chunks; clusters hold only duplicate rows; every
    duplicate check finds the same, and the clusters equal the whole-dataset computation."""
    from curata.checks.duplicates import ConflictingLabelsCheck, SplitLeakageCheck

    checks = [ExactDuplicateCheck(), NearDuplicateCheck(), ConflictingLabelsCheck(), SplitLeakageCheck()]
    memory = _labelled_context(tmp_path, 5, "m")
    expected = [c.run(memory).sort_by("record_id") for c in checks]
    assert all(t.num_rows > 0 for t in expected)
    clusters = groups.shared_clusters(memory)
    n = memory.dataset.num_rows
    assert len(clusters.rows) < n  # only rows in some duplicate cluster
    assert np.array_equal(clusters.cluster_of(np.arange(n)), reference_clusters(memory))

    with outofcore.configured(chunk_rows=7, **FORCE_DUCKDB):
        spilled = _labelled_context(tmp_path, 5, "s")
        got = [c.run(spilled).sort_by("record_id") for c in checks]
        exact = shared_exact(spilled)
        for arr in (exact.group, exact.representatives(), shared_rank(spilled)):
            assert isinstance(arr, np.memmap)
        # The duplicates' working set too: pairs, their nodes, components and clusters.
        near, spilled_clusters = groups.shared_near(spilled), groups.shared_clusters(spilled)
        nodes, local = groups.candidate_nodes(near.pairs, n)
        assert np.array_equal(nodes, np.unique(near.pairs))
        assert np.array_equal(local, np.searchsorted(np.unique(near.pairs), near.pairs))
        parts = (near.pairs, near.similarity, nodes, local, spilled_clusters.rows, spilled_clusters.cluster)
        for arr in (*parts, spilled_clusters.near_codes, *groups.ranked_components(spilled, nodes, local)):
            assert isinstance(arr, np.memmap)
    for want, have in zip(expected, got, strict=True):
        assert have.equals(want)
    assert np.array_equal(
        groups.shared_clusters(spilled).cluster_of(np.arange(n)), reference_clusters(memory)
    )
    assert not any((tmp_path / "s" / "tmp").iterdir())  # nothing left behind but unlinked files


@pytest.mark.parametrize("spilled", [False, True])
def test_counting_order_is_a_stable_sort_by_key(spilled: bool) -> None:
    """``outofcore.counting_order`` gives a stable sort's positions and each key's run end, by
    chunks smaller than the runs, keys absent included."""
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 40, 500) * 2  # odd keys never occur
    settings = {"max_in_memory_rows": 0, "chunk_rows": 9} if spilled else {}
    with outofcore.configured(**settings):
        order, ends = outofcore.counting_order(keys, 81)
    assert isinstance(order, np.memmap) == spilled
    assert np.array_equal(order, np.argsort(keys, kind="stable"))
    assert np.array_equal(ends, np.cumsum(np.bincount(keys, minlength=81)))


def test_large_tables_and_ids_are_read_into_mapped_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``max_in_memory_rows`` rows a Parquet file's columns (all but streamed content) are read
    row group by row group into a mapped file, and the record ids (null and empty ones made row
    numbers) are copied chunk by chunk into file-backed buffers: the dataset equals the one read in
    memory."""
    import pyarrow.parquet as pq

    rng = random.Random(8)
    ids: list[str | None] = [f"doc-{i}" for i in range(60)]
    ids[3], ids[17], ids[40] = None, "", "doc-5"  # missing, empty, repeated
    rows = [
        {"id": ids[i], "text": random_text(rng, 12), "label": f"c{i % 3}", "split": ["train", "test"][i % 2]}
        for i in range(60)
    ]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    memory = read_dataset(path)
    spilled: list[tuple[int, ...]] = []
    spill_array = outofcore.spill_array

    def counting(shape: tuple[int, ...], dtype: object, settings: object = None) -> np.ndarray:
        spilled.append(shape)
        return spill_array(shape, dtype, settings)  # type: ignore[arg-type]

    monkeypatch.setattr(outofcore, "spill_array", counting)
    with outofcore.configured(max_in_memory_rows=0, temp_directory=tmp_path / "tmp"):
        mapped = read_dataset(path)
    assert outofcore.is_mapped(mapped.table) and mapped.table.column("id").num_chunks == 9
    assert (61,) in spilled  # the ids' offsets went to a file-backed buffer
    assert mapped.record_ids.equals(memory.record_ids)
    assert mapped.record_ids.to_pylist()[3] == "3" and mapped.record_ids.to_pylist()[17] == "17"
    assert mapped.table.equals(memory.table)
    assert mapped.roles == memory.roles
    for key in ("null_ids", "duplicate_ids"):
        assert mapped.description[key] == memory.description[key]
    assert (memory.description["null_ids"], memory.description["duplicate_ids"]) == (2, 1)
    assert not any((tmp_path / "tmp").iterdir())  # the files are unlinked at once


def test_combined_strings_equal_combine_chunks_for_sliced_and_large_chunks() -> None:
    """File-backed ``combined_strings`` equals ``combine_chunks`` over sliced, empty and
    ``large_string`` chunks."""
    values = [f"v{i}" * (i % 4) for i in range(40)]
    base = pa.array(values, pa.string())
    chunks = [base.slice(0, 9), base.slice(9, 0), base.slice(9, 20), pa.array(values[29:], pa.large_string())]
    with outofcore.configured(max_in_memory_rows=0):
        got = outofcore.combined_strings(lambda: iter(chunks))
    assert got.type == pa.string() and got.to_pylist() == values


def test_report_examples_and_histograms_go_by_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check's best findings for the report come from one pass over slices (ties: earlier
    first), equal to a full sort by score then position."""
    from curata.checks.base import FINDINGS_SCHEMA
    from curata.report import examples

    monkeypatch.setattr(examples, "SCAN_ROWS", 13)
    rng = np.random.default_rng(4)
    n = 200
    checks = rng.choice(["near_duplicate", "exact_duplicate", "pii"], n)
    scores = np.round(rng.random(n), 1)  # many ties
    findings = pa.table(
        {
            "check": checks,
            "record_id": [f"r{i}" for i in range(n)],
            "related_id": pa.nulls(n, pa.string()),
            "group_id": pa.nulls(n, pa.string()),
            "score": scores,
            "severity": ["warning"] * n,
            "message": [""] * n,
            "evidence": ["{}"] * n,
        },
        schema=FINDINGS_SCHEMA,
    )
    for check in ("near_duplicate", "exact_duplicate", "pii", "absent"):
        mine = np.flatnonzero(checks == check)
        want = mine[np.lexsort((mine, -scores[mine]))][:9].tolist()
        assert examples.top_rows(findings, check, 9) == want
    # The score histograms, also made slice by slice, count every finding once.
    from curata.report import json as report_json

    monkeypatch.setattr(report_json, "HISTOGRAM_ROWS", 13)
    histograms = report_json.score_histograms(findings)
    assert sorted(histograms) == ["exact_duplicate", "near_duplicate", "pii"]
    for check, counts in histograms.items():
        assert counts == np.histogram(scores[checks == check], bins=10, range=(0.0, 1.0))[0].tolist()


def test_label_and_split_codes_equal_the_lists(tmp_path: Path) -> None:
    """``Dataset.role_codes`` gives every row's label or split as a code into the distinct values
    (split aliases canonicalised, blanks and nulls -1), by chunks and file-backed, equal to the
    ``labels()`` / ``splits()`` lists."""
    labels = ["cat", None, "dog", "", "cat", "7", "dog"] * 9
    splits = ["train", "TEST", " ", None, "validation", "holdout", "Train"] * 9
    path = write_parquet(
        tmp_path / "d.parquet",
        [
            {"text": f"t{i}", "label": lab, "split": sp}
            for i, (lab, sp) in enumerate(zip(labels, splits, strict=True))
        ],
    )
    dataset = read_dataset(path, label_column="label", split_column="split")
    for role, want in (("label", dataset.labels()), ("split", dataset.splits())):
        with outofcore.configured(max_in_memory_rows=0, chunk_rows=5):
            codes, names = dataset.role_codes(role)  # type: ignore[arg-type]
        assert isinstance(codes, np.memmap) and len(set(names)) == len(names)
        assert [None if c < 0 else names[c] for c in codes.tolist()] == want
    assert dataset.role_codes("split")[1][:2] == ["train", "test"]
