"""Cross-record work shared by the duplicate, conflict and leakage checks (computed once a run)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curata.checks.base import Context
from curata.dataset import SPLIT_ORDER, Dataset
from curata.engine.base import ColumnRows, ContentEngine
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

        def firsts(lo: int, hi: int) -> np.ndarray:
            hit = np.flatnonzero(group[lo:hi] == np.arange(lo, hi))
            outofcore.release_rows(group, lo, hi)
            return hit

        return outofcore.selected_rows(len(group), firsts)

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, representatives) of every row in a group of two or more but not its representative,
        ascending by row: as many as there are exact copies, whatever the number of records.

        Two passes by chunks (``outofcore.selected_rows``)."""
        from curata import outofcore

        group = self.group

        def copies(lo: int, hi: int) -> np.ndarray:
            part = np.asarray(group[lo:hi])
            hit = np.flatnonzero((part >= 0) & (part != np.arange(lo, hi)))
            outofcore.release_rows(group, lo, hi)
            return hit

        rows = outofcore.selected_rows(len(group), copies)
        return rows, gather(group, rows, np.int64)


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

    def members(self) -> Iterator[tuple[int, np.ndarray]]:
        """(representative, rows ascending) of every cluster with two or more members, by
        representative: a counting sort by chunks (``outofcore.counting_order``), no dict."""
        from curata import outofcore

        order, ends = outofcore.counting_order(self.cluster, self.n)
        start = 0
        for lo, hi in outofcore.row_chunks(self.n):
            part = np.asarray(ends[lo:hi])
            sizes = np.diff(np.r_[start, part])
            for key in np.flatnonzero(sizes > 1).tolist():
                end = int(part[key])
                yield lo + key, np.asarray(self.rows[np.asarray(order[end - int(sizes[key]) : end])])
            start = int(part[-1])

    def sizes(self) -> Counter[int]:
        """How many clusters there are of each size (two or more)."""
        from curata import outofcore

        per_key = outofcore.key_counts(self.cluster, self.n)
        sizes: Counter[int] = Counter()
        for lo, hi in outofcore.row_chunks(self.n):
            part = np.asarray(per_key[lo:hi])
            for size, count in zip(*np.unique(part[part > 1], return_counts=True), strict=True):
                sizes[int(size)] += int(count)
        return sizes

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


def exact_key_name(signals: Signals) -> str:
    """The name of the signal column whose equality means exact duplicate content."""
    return "norm_hash" if signals.modality == "text" else "pixel_hash"


def exact_key_column(signals: Signals) -> pa.ChunkedArray:
    """The column whose equality means exact duplicate content."""
    return signals.column(exact_key_name(signals))


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
    # By reference: a distributed engine's tasks may read the keys from the signal cache's files.
    stored = ColumnRows(keys, None, exact_key_name(signals), signals.files)
    return ExactGroups(runner.group_representatives(stored, valid_content_mask(signals), rank), keys)


def representative_rank(dataset: Dataset) -> np.ndarray:
    """A rank per row: records of earlier splits (train, then val, then test) first, then row order.

    Representatives of duplicate groups are chosen by this rank, so the later copy (e.g. the test
    record) is the one reported. A stable counting sort made chunk by chunk into an
    ``outofcore.row_array`` (file-backed past ``max_in_memory_rows`` rows).
    """
    from curata import outofcore

    n = dataset.num_rows
    rank = outofcore.row_array(n, np.int64)
    codes, names = dataset.role_codes("split")
    splits = len(codes) > 0
    chunks = list(outofcore.row_chunks(n))
    # A class per split code, the last (code -1, no split) after every split.
    class_of = np.array([SPLIT_ORDER.get(s, 1) for s in names] + [3], np.int64)

    def classes(lo: int, hi: int) -> np.ndarray:
        out: np.ndarray = class_of[np.asarray(codes[lo:hi])]
        return out

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
        # The band keys of the rows that are no exact copy, by reference: the engine gathers them
        # (file-backed past the in-memory size), or its tasks read them from the signal cache.
        keys = ColumnRows(signals.column("band_keys"), reps, "band_keys", signals.files)
        cand = engine.bucket_pairs(keys, DEFAULT_MAX_BUCKET)
        del keys
        # From here on only the rows in some candidate pair, and the pairs as int32 positions.
        nodes, local = candidate_nodes(cand, len(reps))
        del cand
        rows = gather(reps, nodes)
        del nodes
        n_chars = column_values(signals.column("n_chars"), rows, np.int64)
        pairs, sims = verify_text_pairs(context.dataset, rows, local, n_chars, settings, engine)
    return NearPairs(pairs, sims)


def candidate_nodes(cand: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows (< n) in some pair of ``cand``, ascending, and the pairs as positions among them
    (int32 when they fit: the largest arrays of the verification are two entries per pair).

    A mark per row, turned into a running count, then looked up for every pair: chunk by chunk,
    into ``outofcore.row_array``s (file-backed past ``max_in_memory_rows``), so what is held does
    not grow with ``n`` nor with the pairs. No sort.
    """
    from curata import outofcore

    pos_type = np.int32 if n < 2**31 else np.int64
    m = len(cand)
    where = outofcore.row_array(n, pos_type)  # 1 for a row in some pair, then its position
    for lo, hi in outofcore.row_chunks(m):
        where[np.asarray(cand[lo:hi]).ravel()] = 1
        outofcore.release_rows(cand, lo, hi)

    def marked(lo: int, hi: int) -> np.ndarray:
        hit = np.flatnonzero(np.asarray(where[lo:hi]))
        outofcore.release_rows(where, lo, hi)
        return hit

    nodes = outofcore.selected_rows(n, marked)
    for lo, hi in outofcore.row_chunks(len(nodes)):
        where[np.asarray(nodes[lo:hi])] = np.arange(lo, hi)
    local = outofcore.row_array(m, pos_type, width=2)
    for lo, hi in outofcore.row_chunks(m):
        local[lo:hi] = where[np.asarray(cand[lo:hi])]
        outofcore.release_rows(local, lo, hi)
        outofcore.release_rows(cand, lo, hi)
    return nodes, local


def gather(values: np.ndarray, index: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``values[index]`` (rows of a 1-D or pair array, or pairs of a 1-D one) into an
    ``outofcore.row_array``, chunk by chunk."""
    from curata import outofcore

    width = values.shape[1] if values.ndim == 2 else index.shape[1] if index.ndim == 2 else 0
    out = outofcore.row_array(len(index), dtype or values.dtype, width=width)
    for lo, hi in outofcore.row_chunks(len(index)):
        out[lo:hi] = values[np.asarray(index[lo:hi])]
        outofcore.release_rows(out, lo, hi)
    return out


def column_values(column: pa.ChunkedArray, rows: np.ndarray, dtype: Any) -> np.ndarray:
    """The values of an Arrow column at ``rows``, into an ``outofcore.row_array``, chunk by chunk."""
    from curata import outofcore

    out = outofcore.row_array(len(rows), dtype)
    for lo, hi in outofcore.row_chunks(len(rows)):
        taken = column.take(pa.array(np.asarray(rows[lo:hi]), pa.int64()))
        out[lo:hi] = np.asarray(taken.to_numpy(zero_copy_only=False), dtype=dtype)
        outofcore.release_rows(out, lo, hi)
    return out


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
    from curata import outofcore
    from curata.lsh import connected_labels

    if len(local) == 0:
        return np.empty((0, 2), np.int64), np.empty(0, np.float64)
    m, nodes = len(local), len(rows)
    comp = connected_labels(nodes, local)
    # Each component's weight (its texts' characters), kept at its label (lowest node).
    weight = outofcore.row_array(nodes, np.int64)
    for lo, hi in outofcore.row_chunks(nodes):
        np.add.at(weight, np.asarray(comp[lo:hi]), np.asarray(n_chars[lo:hi], np.int64) + 1)
    total = 0
    for lo, hi in outofcore.row_chunks(nodes):
        total += int(weight[lo:hi].sum())
    # Partitions of consecutive components; never more than MAX_VERIFY_PARTITIONS spill files.
    # ``weight`` becomes each component's partition, -1 for a giant one (verified by itself).
    budget = max(VERIFY_CHUNK_SHINGLES, -(-total // MAX_VERIFY_PARTITIONS))
    carry = 0
    for lo, hi in outofcore.row_chunks(nodes):
        w = np.asarray(weight[lo:hi])
        giant = w > budget
        packed = np.cumsum(np.where(giant, 0, w)) + carry
        carry = int(packed[-1])
        weight[lo:hi] = np.where(giant, -1, packed // budget if total > budget else 0)
        outofcore.release_rows(weight, lo, hi)
    doc_part = gather(weight, comp, np.int32)
    del comp, weight
    order, bounds = _pairs_by_partition(doc_part, local)
    # Each pair's Jaccard, written at its place: the kept pairs come out in ``local``'s order.
    jaccard = outofcore.filled_row_array(m, np.float64, -1.0)
    # Giant components: chunks of pairs, texts fetched by row for each chunk (as before partitions).
    gpairs = np.asarray(order[bounds[0] : bounds[1]])
    for part in verify_chunks(local[gpairs], n_chars):
        idx = gpairs[part]
        chunk = np.asarray(local[idx])
        members = np.unique(chunk)
        texts = dataset.take("text", np.asarray(rows[members]))
        jaccard[idx] = _partition_jaccard(texts, np.searchsorted(members, chunk), settings)
    n_parts = len(bounds) - 2
    if n_parts > 0:
        results: Iterator[np.ndarray]
        if isinstance(engine, ContentEngine):
            # Its workers read the candidates' texts and shuffle them to their partitions' tasks.
            results = engine.map_partitions(
                content_source(dataset),
                np.asarray(rows),
                np.asarray(doc_part),
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
            jaccard[np.asarray(order[bounds[p + 1] : bounds[p + 2]])] = jac
    del order, doc_part
    return _kept_pairs(rows, local, jaccard, settings.min_jaccard)


def _pairs_by_partition(doc_part: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair positions ordered by their partition (-1 first), stably, and each partition's bounds
    in that order (``bounds[k + 1]:bounds[k + 2]`` is partition k, ``bounds[0]:bounds[1]`` the
    giant components' pairs).

    A counting sort by chunks (``outofcore.counting_order``): no sort of every pair.
    """
    from curata import outofcore

    n_keys = 1
    for lo, hi in outofcore.row_chunks(len(doc_part)):
        n_keys = max(n_keys, int(np.max(doc_part[lo:hi], initial=-1)) + 2)
    keys = outofcore.row_array(len(local), np.int32)
    for lo, hi in outofcore.row_chunks(len(local)):
        keys[lo:hi] = np.asarray(doc_part[np.asarray(local[lo:hi, 0])]) + 1
        outofcore.release_rows(keys, lo, hi)
    order, ends = outofcore.counting_order(keys, n_keys)
    return order, np.concatenate([[0], np.asarray(ends)])


def _kept_pairs(
    rows: np.ndarray, local: np.ndarray, jaccard: np.ndarray, min_jaccard: float
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (as dataset rows) whose Jaccard reaches ``min_jaccard``, in ``local``'s order, and
    their Jaccard, gathered by chunks into ``outofcore.row_array``s."""
    from curata import outofcore

    def kept(lo: int, hi: int) -> np.ndarray:
        hit = np.flatnonzero(np.asarray(jaccard[lo:hi]) >= min_jaccard)
        outofcore.release_rows(jaccard, lo, hi)
        return hit

    which = outofcore.selected_rows(len(local), kept)
    return gather(rows, gather(local, which), np.int64), gather(jaccard, which)


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
    per position), and the positions that are not their component's representative, ascending.
    Costs what the pairs cost, not the number of records: a few passes by chunks over
    ``outofcore.row_array``s (file-backed past ``max_in_memory_rows``), with no sort.
    """
    from curata import outofcore

    nodes = len(rows)
    label = context_engine(context).connected_components(nodes, local)
    rank = shared_rank(context)
    chunks = list(outofcore.row_chunks(nodes))
    # Per label (a component's lowest node): its size and its lowest rank, then the node holding it.
    size_of = outofcore.key_counts(label, nodes)
    lowest = outofcore.filled_row_array(nodes, np.int64, np.iinfo(np.int64).max)
    for lo, hi in chunks:
        np.minimum.at(lowest, np.asarray(label[lo:hi]), np.asarray(rank[np.asarray(rows[lo:hi])]))
    head = outofcore.row_array(nodes, np.int64)
    for lo, hi in chunks:
        lab = np.asarray(label[lo:hi])
        own = np.flatnonzero(np.asarray(rank[np.asarray(rows[lo:hi])]) == lowest[lab])
        head[lab[own]] = lo + own
    del lowest
    rep, size = gather(head, label), gather(size_of, label)
    del label, head, size_of

    def others(lo: int, hi: int) -> np.ndarray:
        return np.flatnonzero(np.asarray(rep[lo:hi]) != np.arange(lo, hi))

    return rep, size, outofcore.selected_rows(nodes, others)


def shared_clusters(context: Context) -> DuplicateClusters:
    """Clusters of exact and near duplicates, computed once per run.

    Only rows in some exact group of two or more or some near pair take part (their components
    over both kinds of pairs, found by the engine): the work and memory grow with the duplicates
    found, not with the number of records, and past ``max_in_memory_rows`` they are file-backed
    ``outofcore.row_array``s, made chunk by chunk.
    """
    from curata import outofcore

    def compute() -> DuplicateClusters:
        exact = shared_exact(context)
        near = shared_near(context)
        with outofcore.configured(**workspace_temp(context)):
            return _clusters(context, exact, near)

    clusters: DuplicateClusters = context.shared("clusters", compute)
    return clusters


def _clusters(context: Context, exact: ExactGroups, near: NearPairs) -> DuplicateClusters:
    """Components over the exact groups' and the near pairs' edges (see :func:`shared_clusters`)."""
    from curata import outofcore

    n = len(exact.group)
    dup_rows, dup_reps = exact.duplicates()
    k, m = len(dup_rows), len(near.pairs)
    edges = outofcore.row_array(k + m, np.int64, width=2)
    for lo, hi in outofcore.row_chunks(k):
        edges[lo:hi, 0], edges[lo:hi, 1] = dup_reps[lo:hi], dup_rows[lo:hi]
        outofcore.release_rows(edges, lo, hi)
    for lo, hi in outofcore.row_chunks(m):
        edges[k + lo : k + hi] = near.pairs[lo:hi]
        outofcore.release_rows(edges, k + lo, k + hi)
    del dup_rows, dup_reps
    rows, pairs = candidate_nodes(edges, n)
    del edges
    rep, _, _ = ranked_components(context, rows, pairs)
    del pairs
    codes, similarity = _near_codes(near, n)
    threshold = float(np.min(near.similarity)) if m else 1.0
    return DuplicateClusters(n, rows, gather(rows, rep), exact.group, codes, similarity, threshold)


def _near_codes(near: NearPairs, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The near pairs as ascending ``a * n + b`` codes (``a < b``) and their similarity.

    Text pairs come sorted (candidates are), so the codes are written chunk by chunk into an
    ``outofcore.row_array``; pairs in another order (images) are sorted in memory.
    """
    from curata import outofcore

    m = len(near.pairs)
    codes = outofcore.row_array(m, np.int64)
    ascending = True
    last = -1
    for lo, hi in outofcore.row_chunks(m):
        pair = np.asarray(near.pairs[lo:hi], dtype=np.int64)
        part = np.minimum(pair[:, 0], pair[:, 1]) * n + np.maximum(pair[:, 0], pair[:, 1])
        ascending = ascending and bool(part[0] > last) and bool(np.all(part[1:] > part[:-1]))
        last = int(part[-1])
        codes[lo:hi] = part
        outofcore.release_rows(codes, lo, hi)
    similarity = np.asarray(near.similarity, np.float64)
    if ascending:
        return codes, similarity
    by_code = np.argsort(codes, kind="stable")
    return np.asarray(codes)[by_code], similarity[by_code]
