"""Cross-record work shared by the duplicate, conflict and leakage checks (computed once a run)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curata.checks.base import Context
from curata.dataset import SPLIT_ORDER, Dataset
from curata.engine.base import ContentEngine
from curata.signals.pipeline import Signals, content_source

if TYPE_CHECKING:
    from curata.engine import Engine


@dataclass(frozen=True)
class ExactGroups:
    """Exact-duplicate groups: ``group[row]`` is the group's first row, -1 for rows left out."""

    group: np.ndarray
    keys: pa.ChunkedArray

    def key(self, row: int) -> str:
        """The content key (hash) of ``row``, as hex text."""
        value = self.keys[row].as_py()
        if isinstance(value, bytes):
            return value.hex()
        return str(value or "")

    def representatives(self) -> np.ndarray:
        """Rows that represent their group (first row), including singletons, ascending.

        Read and written chunk by chunk: an ``outofcore.row_array`` (file-backed past
        ``max_in_memory_rows`` rows).
        """
        from curata import outofcore

        group = self.group
        chunks = list(outofcore.row_chunks(len(group)))
        counts = []
        for lo, hi in chunks:
            counts.append(int(np.count_nonzero(group[lo:hi] == np.arange(lo, hi))))
            outofcore.release_rows(group, lo, hi)
        reps = outofcore.row_array(sum(counts), np.int64)
        at = 0
        for (lo, hi), count in zip(chunks, counts, strict=True):
            reps[at : at + count] = lo + np.flatnonzero(group[lo:hi] == np.arange(lo, hi))
            outofcore.release_rows(group, lo, hi)
            outofcore.release_rows(reps, at, at + count)
            at += count
        return reps

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, representatives) of every row in a group of two or more but not its representative,
        ascending by row: as many as there are exact copies, whatever the number of records."""
        from curata import outofcore

        group = self.group
        rows: list[np.ndarray] = []
        reps: list[np.ndarray] = []
        for lo, hi in outofcore.row_chunks(len(group)):
            part = np.asarray(group[lo:hi])
            hit = np.flatnonzero((part >= 0) & (part != np.arange(lo, hi)))
            rows.append(lo + hit)
            reps.append(part[hit])
            outofcore.release_rows(group, lo, hi)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows).astype(np.int64), np.concatenate(reps).astype(np.int64)


@dataclass(frozen=True)
class NearPairs:
    """Verified near-duplicate pairs between exact-group representatives, with similarity."""

    pairs: np.ndarray
    similarity: np.ndarray


@dataclass(frozen=True)
class DuplicateClusters:
    """Clusters joining exact and near duplicates, over the rows in some cluster of two or more.

    ``rows`` (ascending) are those rows and ``cluster`` their cluster's representative (its row of
    lowest rank); every other valid row is a cluster of its own. Near pairs are kept as two compact
    arrays (sorted ``a * n + b`` codes and their similarity), not a dict of Python tuples, which
    would cost ~200 bytes a pair. Nothing here has a row per record except ``exact_group`` (an
    ``outofcore.row_array``).
    """

    n: int
    rows: np.ndarray
    cluster: np.ndarray
    exact_group: np.ndarray
    near_codes: np.ndarray
    near_similarity: np.ndarray
    chain_similarity: float

    def members(self) -> dict[int, np.ndarray]:
        """Rows of every cluster with two or more members, keyed by its representative."""
        order = np.argsort(self.cluster, kind="stable")
        sorted_ids = self.cluster[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        ends = np.r_[starts[1:], len(order)]
        out: dict[int, np.ndarray] = {}
        for s, e in zip(starts, ends, strict=True):
            if e - s > 1:
                out[int(sorted_ids[s])] = self.rows[np.sort(order[s:e])]
        return out

    def cluster_of(self, rows: np.ndarray) -> np.ndarray:
        """The cluster (representative row) of each of ``rows``: the row itself when it is in no
        cluster of two or more, -1 for rows left out of duplicate detection (empty, unreadable)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.where(np.asarray(self.exact_group[rows]) >= 0, rows, -1)
        if len(self.rows):
            pos = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
            hit = self.rows[pos] == rows
            out[hit] = self.cluster[pos[hit]]
        return out

    def pair_similarity(self, a: int, b: int) -> float:
        """Similarity of two rows of one cluster: 1.0 when exact, the verified pair's value when near.

        Rows joined only through a chain of near pairs get ``chain_similarity`` (the threshold).
        """
        ra, rb = int(self.exact_group[a]), int(self.exact_group[b])
        if ra == rb:
            return 1.0
        code = min(ra, rb) * self.n + max(ra, rb)
        i = int(np.searchsorted(self.near_codes, code))
        if i < len(self.near_codes) and int(self.near_codes[i]) == code:
            return float(self.near_similarity[i])
        return self.chain_similarity


#: Shingles (about one per character) verified at once: bounds the shingle hashes held in memory
#: to about 8 bytes times this, whatever the number of candidate pairs or the length of the texts.
VERIFY_CHUNK_SHINGLES = 4_000_000


def verify_chunks(cand: np.ndarray, n_chars: np.ndarray) -> list[slice]:
    """Split candidate pairs into consecutive chunks whose texts hold at most ~VERIFY_CHUNK_SHINGLES.

    The bound counts a text once per pair it is in (an over-estimate), so it holds for any chunk.
    """
    if len(cand) == 0:
        return []
    cost = np.cumsum(n_chars[cand[:, 0]].astype(np.int64) + n_chars[cand[:, 1]] + 2)
    cuts = np.searchsorted(cost, np.arange(VERIFY_CHUNK_SHINGLES, int(cost[-1]), VERIFY_CHUNK_SHINGLES))
    bounds = np.unique(np.concatenate([[0], np.maximum(cuts, 1), [len(cand)]]))
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def valid_content_mask(signals: Signals) -> np.ndarray:
    """Rows whose content can be compared (non-empty text, decodable non-empty image).

    Made chunk by chunk into an ``outofcore.row_array`` (file-backed past ``max_in_memory_rows``).
    """
    from curata import outofcore

    column = signals.column("n_chars" if signals.modality == "text" else "error")
    mask = outofcore.row_array(len(column), bool)
    offset = 0
    for piece in column.chunks:
        for lo, hi in outofcore.row_chunks(len(piece)):
            part = piece.slice(lo, hi - lo)
            if signals.modality == "text":
                flags = np.asarray(part.to_numpy(zero_copy_only=False)) > 0
            else:
                flags = np.asarray(part.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            mask[offset + lo : offset + hi] = flags
            outofcore.release_rows(mask, offset + lo, offset + hi)
        offset += len(piece)
    return mask


def exact_key_column(signals: Signals) -> pa.ChunkedArray:
    """The column whose equality means exact duplicate content."""
    return signals.column("norm_hash" if signals.modality == "text" else "pixel_hash")


def exact_groups(signals: Signals, rank: np.ndarray, engine: Engine | None = None) -> ExactGroups:
    """Group rows with identical normalised content; invalid rows (and null keys) get -1.

    The representative of a group is its row of lowest ``rank`` (see ``representative_rank``).
    The engine forms the groups (``group_representatives``; the local engine in memory or, above
    ``OutOfCoreSettings.max_in_memory_rows`` rows, in DuckDB; the Ray engine by a shuffle), all
    giving the same groups; None: a one-worker local engine.
    """
    from curata.engine import LocalEngine

    keys = exact_key_column(signals)
    runner = engine or LocalEngine(workers=1)
    return ExactGroups(runner.group_representatives(keys, valid_content_mask(signals), rank), keys)


def representative_rank(dataset: Dataset) -> np.ndarray:
    """A rank per row: records of earlier splits (train, then val, then test) first, then row order.

    Representatives of duplicate groups are chosen by this rank, so the later copy (e.g. the test
    record) is the one reported. A stable counting sort made chunk by chunk into an
    ``outofcore.row_array`` (file-backed past ``max_in_memory_rows`` rows).
    """
    from curata import outofcore

    n = dataset.num_rows
    rank = outofcore.row_array(n, np.int64)
    splits = dataset.splits()
    chunks = list(outofcore.row_chunks(n))

    def classes(lo: int, hi: int) -> np.ndarray:
        return np.array([SPLIT_ORDER.get(s, 1) if s is not None else 3 for s in splits[lo:hi]], np.int64)

    # Rows of split class c take the ranks base[c], base[c] + 1, ... in row order.
    sizes = np.zeros(4, np.int64)
    if splits:
        for lo, hi in chunks:
            sizes += np.bincount(classes(lo, hi), minlength=4)
    else:
        sizes[0] = n
    seen = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for lo, hi in chunks:
        c = classes(lo, hi) if splits else np.zeros(hi - lo, np.int64)
        order = np.argsort(c, kind="stable")
        counts = np.bincount(c, minlength=4)
        within = np.arange(hi - lo) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        ranks = np.empty(hi - lo, np.int64)
        ranks[order] = seen[c[order]] + within
        rank[lo:hi] = ranks
        seen += counts
        outofcore.release_rows(rank, lo, hi)
    return rank


def normalized_texts(dataset: Dataset, rows: np.ndarray) -> list[str]:
    """Normalised text of the given rows (recomputed on demand, cheaper than storing it)."""
    from curata.signals.text import normalize_text

    values = dataset.take("text", rows).to_pylist()
    return [normalize_text(str(v)) if v is not None else "" for v in values]


def rep_band_keys(signals: Signals, reps: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The (len(reps), bands) band keys of rows ``reps``, gathered chunk by chunk (no combined copy
    of the whole column first), into ``out`` when given (e.g. an ``outofcore.spill_array``)."""
    from curata import outofcore

    col = signals.column("band_keys")
    bands = col.type.list_size
    if out is None:
        dtype = col.type.value_type.to_pandas_dtype() if len(col) else np.uint32
        out = np.empty((len(reps), bands), dtype=dtype)
    offset = 0
    for chunk in col.chunks:
        lo, hi = np.searchsorted(reps, [offset, offset + len(chunk)])
        if hi > lo:
            values = chunk.values.slice(chunk.offset * bands, len(chunk) * bands)
            view = np.asarray(values.to_numpy(zero_copy_only=False)).reshape(-1, bands)
            out[lo:hi] = view[reps[lo:hi] - offset]
            outofcore.release_rows(out, int(lo), int(hi))
            outofcore.release(chunk)
        offset += len(chunk)
    return out


def context_engine(context: Context) -> Engine:
    """The engine the audit runs on (a one-worker local engine when the context names none)."""
    from curata.engine import LocalEngine

    engine: Engine = context.settings.get("engine") or LocalEngine(workers=1)
    return engine


def text_near_pairs(context: Context, reps: np.ndarray) -> NearPairs:
    """MinHash-LSH candidates among ``reps``, verified by exact Jaccard of shingle sets."""
    from curata import outofcore
    from curata.lsh import DEFAULT_MAX_BUCKET

    signals: Signals = context.signals["data"]
    settings = context.settings["signals"].minhash
    engine = context_engine(context)
    with outofcore.configured(**workspace_temp(context)):
        key_type = signals.column("band_keys").type
        # Past the in-memory size the keys go to a file-backed array the out-of-core path reads by
        # chunks: they are a copy of the signal column (rows of exact copies left out), as large.
        shape = (len(reps), key_type.list_size)
        spill = shape[0] * shape[1] > outofcore.current().max_in_memory_keys
        out = outofcore.spill_array(shape, key_type.value_type.to_pandas_dtype()) if spill else None
        keys = rep_band_keys(signals, reps, out)
        cand = engine.bucket_pairs(keys, DEFAULT_MAX_BUCKET)
        del keys, out
        # From here on only the rows in some candidate pair, and the pairs as int32 positions.
        nodes, local = candidate_nodes(cand, len(reps))
        del cand
        rows = np.asarray(reps[nodes], dtype=np.int64)
        n_chars = np.asarray(signals.column("n_chars").take(pa.array(rows)).to_numpy(zero_copy_only=False))
        pairs, sims = verify_text_pairs(context.dataset, rows, local, n_chars, settings, engine)
    return NearPairs(pairs, sims)


def candidate_nodes(cand: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows (< n) in some pair of ``cand``, ascending, and the pairs as positions among them
    (int32 when they fit: the largest arrays of the verification are two entries per pair).

    Costs what the pairs cost, not ``n``."""
    nodes = np.unique(cand)
    local = np.searchsorted(nodes, cand)
    return nodes, local.astype(np.int32) if n < 2**31 else local


def workspace_temp(context: Context) -> dict[str, Any]:
    """Out-of-core settings pointing DuckDB and spill files into the audit's workspace."""
    workspace = context.settings.get("workspace")
    return {"temp_directory": Path(workspace) / "tmp"} if workspace is not None else {}


def verify_text_pairs(
    dataset: Dataset,
    rows: np.ndarray,
    local: np.ndarray,
    n_chars: np.ndarray,
    settings: Any,
    engine: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Jaccard of candidate pairs; returns (kept pairs of dataset rows, their Jaccard).

    ``rows`` are the dataset rows of the candidates (ascending), ``local`` the pairs as positions
    into ``rows`` and ``n_chars`` their lengths; kept pairs come out in ``local``'s order.  Pairs
    are verified per *partition*: whole connected components of the candidate graph packed up to
    ``VERIFY_CHUNK_SHINGLES`` characters, so each text is read, normalised and shingled once, and
    the work runs through the engine (the local engine's process pool).  When the candidates'
    texts exceed one partition they are first copied, in one sequential pass over the data, into
    one spill file per partition: reading them back by row would touch every row group of the data
    for every chunk of pairs when duplicates lie far apart, a cost quadratic in the data size.  An
    engine whose workers read the content (:class:`ContentEngine`, Ray) does both as one shuffle
    instead (``map_partitions``): this process never reads the texts.  A component larger than a
    partition (rare: thousands of near copies chained together) is verified on its own in chunks
    of pairs, its texts fetched here.
    """
    from curata.lsh import connected_labels

    if len(local) == 0:
        return np.empty((0, 2), np.int64), np.empty(0, np.float64)
    comp = connected_labels(len(rows), local)
    comp_weight = np.bincount(comp, weights=n_chars.astype(np.int64) + 1).astype(np.int64)
    total = int(comp_weight.sum())
    # Partitions of consecutive components; never more than MAX_VERIFY_PARTITIONS spill files.
    budget = max(VERIFY_CHUNK_SHINGLES, -(-total // MAX_VERIFY_PARTITIONS))
    giant = comp_weight > budget
    packed = np.where(giant, 0, comp_weight)
    comp_part = np.cumsum(packed) // budget if total > budget else np.zeros(len(comp_weight), np.int64)
    doc_part = np.where(giant, -1, comp_part)[comp].astype(np.int32)
    del comp, comp_weight, packed, comp_part, giant
    pair_part = doc_part[local[:, 0]]
    order = np.argsort(pair_part, kind="stable")
    if len(order) < 2**31:
        order = order.astype(np.int32)
    bounds = np.searchsorted(pair_part[order], np.arange(-1, int(pair_part.max()) + 2))
    del pair_part
    kept: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    # Giant components: chunks of pairs, texts fetched by row for each chunk (as before partitions).
    gpairs = order[bounds[0] : bounds[1]]
    for part in verify_chunks(local[gpairs], n_chars):
        idx = gpairs[part]
        chunk = local[idx]
        nodes = np.unique(chunk)
        texts = dataset.take("text", rows[nodes])
        jac = _partition_jaccard(texts, np.searchsorted(nodes, chunk), settings)
        keep = jac >= settings.min_jaccard
        kept.append(idx[keep])
        sims.append(jac[keep])
    n_parts = len(bounds) - 2
    if n_parts > 0:
        results: Iterator[np.ndarray]
        if isinstance(engine, ContentEngine):
            # Its workers read the candidates' texts and shuffle them to their partitions' tasks.
            results = engine.map_partitions(
                content_source(dataset),
                rows,
                doc_part,
                _partition_pairs(doc_part, local, order, bounds, n_parts),
                _verify_texts,
                args=(settings,),
                description="verifying near duplicates",
            )
        else:
            jobs = _partition_jobs(dataset, rows, doc_part, local, order, bounds, n_parts)
            results = engine.map_batches(
                _verify_partition,
                jobs,
                args=(settings,),
                description="verifying near duplicates",
                total=n_parts,
            )
        for p, jac in enumerate(results):
            idx = order[bounds[p + 1] : bounds[p + 2]]
            keep = jac >= settings.min_jaccard
            kept.append(idx[keep])
            sims.append(jac[keep])
    if not kept:
        return np.empty((0, 2), np.int64), np.empty(0, np.float64)
    all_kept = np.concatenate(kept).astype(np.int64)
    all_sims = np.concatenate(sims)
    by_pair = np.argsort(all_kept, kind="stable")
    return rows[local[all_kept[by_pair]]].astype(np.int64), all_sims[by_pair]


#: Most spill files (partitions) of one verification; past it partitions grow beyond the budget.
MAX_VERIFY_PARTITIONS = 1024


def _partition_jobs(
    dataset: Dataset,
    rows: np.ndarray,
    doc_part: np.ndarray,
    local: np.ndarray,
    order: np.ndarray,
    bounds: np.ndarray,
    n_parts: int,
) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Yield (raw texts, pairs as positions in them) for each partition, in partition order."""
    if n_parts == 1:
        members = np.flatnonzero(doc_part == 0)
        texts = dataset.take("text", rows[members])
        yield texts, np.searchsorted(members, local[order[bounds[1] : bounds[2]]])
        return
    yield from _spilled_partitions(dataset, rows, doc_part, local, order, bounds, n_parts)


def _partition_pairs(
    doc_part: np.ndarray, local: np.ndarray, order: np.ndarray, bounds: np.ndarray, n_parts: int
) -> list[np.ndarray]:
    """Each partition's pairs as positions among its own members (its rows, ascending)."""
    by_part = np.argsort(doc_part, kind="stable")
    starts = np.searchsorted(doc_part[by_part], np.arange(n_parts + 1))
    return [
        np.searchsorted(by_part[starts[p] : starts[p + 1]], local[order[bounds[p + 1] : bounds[p + 2]]])
        for p in range(n_parts)
    ]


def _verify_texts(texts: pa.Array, pairs: np.ndarray, settings: Any) -> np.ndarray:
    """Exact Jaccard of one partition's pairs (``ContentEngine.map_partitions``' function)."""
    return _partition_jaccard(texts, pairs, settings)


#: Records read at a time by the spill pass of the verification (bigger writes per partition file).
SPILL_BATCH_ROWS = 65_536


def _spilled_partitions(
    dataset: Dataset,
    rows: np.ndarray,
    doc_part: np.ndarray,
    local: np.ndarray,
    order: np.ndarray,
    bounds: np.ndarray,
    n_parts: int,
) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Copy the candidates' texts into one Arrow spill file per partition (one sequential pass over
    the data), then read the partitions back one at a time."""
    import shutil
    import tempfile

    from curata import outofcore

    temp = outofcore.current().temp_directory
    if temp is not None:
        temp.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="curata-verify-", dir=temp))
    schema = pa.schema([("idx", pa.int64()), ("text", pa.large_string())])
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    try:
        writers = [
            pa.ipc.new_file(str(folder / f"p{p:05d}.arrow"), schema, options=options) for p in range(n_parts)
        ]
        offset = 0
        pos = 0
        for values in dataset.content_batches("text", SPILL_BATCH_ROWS):
            end = offset + len(values)
            stop = int(np.searchsorted(rows, end))
            if stop > pos:
                sel = np.arange(pos, stop)
                parts = doc_part[sel]
                texts = _as_large_string(values.take(pa.array(rows[sel] - offset)))
                by_part = np.argsort(parts, kind="stable")
                cuts = np.flatnonzero(np.diff(parts[by_part])) + 1
                for group in np.split(by_part, cuts):
                    p = int(parts[group[0]])
                    if p < 0:
                        continue  # giant component, verified separately
                    outofcore.record(len(group))
                    batch = pa.record_batch(
                        [pa.array(sel[group]), texts.take(pa.array(group))], schema=schema
                    )
                    writers[p].write_batch(batch)
                pos = stop
            offset = end
        for w in writers:
            w.close()
        for p in range(n_parts):
            path = folder / f"p{p:05d}.arrow"
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            path.unlink()
            idx = np.asarray(table.column("idx").to_numpy())
            pairs = local[order[bounds[p + 1] : bounds[p + 2]]]
            yield table.column("text").combine_chunks(), np.searchsorted(idx, pairs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_large_string(values: pa.Array) -> pa.Array:
    """Text values as ``large_string`` (a column of another type is turned into text as the
    signal pass does, with ``str``)."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values.cast(pa.large_string())
    return pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.large_string())


def _verify_partition(job: tuple[pa.Array, np.ndarray], settings: Any) -> np.ndarray:
    """Exact Jaccard of one partition's pairs (positions into its texts); runs in an engine worker."""
    texts, pairs = job
    return _partition_jaccard(texts, pairs, settings)


def _partition_jaccard(texts: pa.Array, pairs: np.ndarray, settings: Any) -> np.ndarray:
    """Normalise and shingle ``texts`` once each, then the exact Jaccard of every pair of positions."""
    from curata.lsh import jaccard_of_pairs
    from curata.signals.text import normalize_text, shingle_hashes

    norm = [normalize_text(str(v)) if v is not None else "" for v in texts.to_pylist()]
    hashes, offsets = shingle_hashes(norm, settings)
    return jaccard_of_pairs(hashes, offsets, pairs)


def image_near_pairs(context: Context, reps: np.ndarray) -> NearPairs:
    """Perceptual-hash neighbours among ``reps`` within the configured Hamming distance."""
    from curata.signals.image import near_duplicate_image_pairs

    signals: Signals = context.signals["data"]
    codes = phash_codes(signals, reps)
    pairs, sim = near_duplicate_image_pairs(codes, context.settings["signals"].image)
    return NearPairs(reps[pairs] if len(pairs) else np.empty((0, 2), np.int64), np.asarray(sim, np.float64))


def phash_codes(signals: Signals, rows: np.ndarray) -> np.ndarray:
    """Perceptual codes of ``rows`` as a numpy array (uint64 or uint8 bytes per row)."""
    col = signals.column("phash").take(pa.array(rows, pa.int64())).combine_chunks()
    if pa.types.is_fixed_size_binary(col.type):
        width = col.type.byte_width
        buf = col.buffers()[1]
        assert buf is not None
        return np.frombuffer(buf, dtype=np.uint8, count=len(col) * width, offset=col.offset * width).reshape(
            -1, width
        )
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.uint64)


def shared_rank(context: Context) -> np.ndarray:
    """The representative rank of the audited data's rows, computed once per run."""
    from curata import outofcore

    def compute() -> np.ndarray:
        with outofcore.configured(**workspace_temp(context)):
            return representative_rank(context.dataset)

    rank: np.ndarray = context.shared("rank", compute)
    return rank


def shared_exact(context: Context) -> ExactGroups:
    """Exact groups of the audited data, computed once per run."""
    from curata import outofcore

    def compute() -> ExactGroups:
        with outofcore.configured(**workspace_temp(context)):
            return exact_groups(context.signals["data"], shared_rank(context), context_engine(context))

    groups: ExactGroups = context.shared("exact_groups", compute)
    return groups


def shared_near(context: Context) -> NearPairs:
    """Near pairs of the audited data, computed once per run."""

    from curata import outofcore

    def compute() -> NearPairs:
        with outofcore.configured(**workspace_temp(context)):
            reps = shared_exact(context).representatives()
        if context.dataset.modality == "text":
            return text_near_pairs(context, reps)
        return image_near_pairs(context, reps)

    near: NearPairs = context.shared("near_pairs", compute)
    return near


def ranked_components(context: Context, rows: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, ...]:
    """Connected components of ``local`` (pairs of positions into ``rows``, found by the engine),
    each represented by its row of lowest representative rank.

    Returns ``(rep, size, members)``: each node's representative and its component's size (both
    per position), and the positions that are not their component's representative, component
    by component in rank order. Costs what the pairs cost, not the number of records.
    """
    nodes = len(rows)
    label = context_engine(context).connected_components(nodes, local)
    order = np.lexsort((np.asarray(shared_rank(context)[rows], dtype=np.int64), label))
    lab = label[order]
    del label
    first = np.r_[True, lab[1:] != lab[:-1]] if nodes else np.zeros(0, bool)
    del lab
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, nodes])
    rep = np.empty(nodes, dtype=order.dtype)
    rep[order] = np.repeat(order[starts], sizes)
    size = np.empty(nodes, dtype=np.int64)
    size[order] = np.repeat(sizes, sizes)
    return rep, size, order[~first]


def shared_clusters(context: Context) -> DuplicateClusters:
    """Clusters of exact and near duplicates, computed once per run.

    Only rows in some exact group of two or more or some near pair take part (their components
    over both kinds of pairs, found by the engine): the work and memory grow with the duplicates
    found, not with the number of records.
    """

    def compute() -> DuplicateClusters:
        exact = shared_exact(context)
        near = shared_near(context)
        n = len(exact.group)
        dup_rows, dup_reps = exact.duplicates()
        near_pairs = np.asarray(near.pairs, dtype=np.int64).reshape(-1, 2)
        rows = np.unique(np.concatenate([dup_rows, dup_reps, near_pairs.ravel()]))
        pairs = np.searchsorted(rows, np.concatenate([np.stack([dup_reps, dup_rows], axis=1), near_pairs]))
        del dup_rows, dup_reps
        rep, _, _ = ranked_components(context, rows, pairs)
        cluster = rows[rep]
        a, b = np.minimum(near_pairs[:, 0], near_pairs[:, 1]), np.maximum(near_pairs[:, 0], near_pairs[:, 1])
        codes = a * n + b
        by_code = np.argsort(codes, kind="stable")
        threshold = float(near.similarity.min()) if len(near.similarity) else 1.0
        return DuplicateClusters(
            n,
            rows,
            cluster,
            exact.group,
            codes[by_code],
            np.asarray(near.similarity, np.float64)[by_code],
            threshold,
        )

    clusters: DuplicateClusters = context.shared("clusters", compute)
    return clusters
