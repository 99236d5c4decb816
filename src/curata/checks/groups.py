"""Cross-record work shared by the duplicate, conflict and leakage checks (computed once a run)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata.checks.base import Context, clusters_from_pairs
from curata.dataset import SPLIT_ORDER, Dataset
from curata.signals.pipeline import Signals


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
        """Rows that represent their group (first row), including singletons."""
        return np.flatnonzero(self.group == np.arange(len(self.group)))


@dataclass(frozen=True)
class NearPairs:
    """Verified near-duplicate pairs between exact-group representatives, with similarity."""

    pairs: np.ndarray
    similarity: np.ndarray


@dataclass(frozen=True)
class DuplicateClusters:
    """Clusters joining exact and near duplicates: ``cluster[row]`` is the cluster's representative."""

    cluster: np.ndarray
    exact_group: np.ndarray
    similarity: dict[tuple[int, int], float]
    chain_similarity: float

    def members(self) -> dict[int, np.ndarray]:
        """Rows of every cluster with two or more members, keyed by its first row."""
        order = np.argsort(self.cluster, kind="stable")
        sorted_ids = self.cluster[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        ends = np.r_[starts[1:], len(order)]
        out: dict[int, np.ndarray] = {}
        for s, e in zip(starts, ends, strict=True):
            if e - s > 1 and sorted_ids[s] >= 0:
                out[int(sorted_ids[s])] = np.sort(order[s:e])
        return out

    def pair_similarity(self, a: int, b: int) -> float:
        """Similarity of two rows of one cluster: 1.0 when exact, the verified pair's value when near.

        Rows joined only through a chain of near pairs get ``chain_similarity`` (the threshold).
        """
        ra, rb = int(self.exact_group[a]), int(self.exact_group[b])
        if ra == rb:
            return 1.0
        return self.similarity.get((min(ra, rb), max(ra, rb)), self.chain_similarity)


#: Shingles (about one per character) verified at once: bounds the shingle hashes held in memory
#: to about 8 bytes times this, whatever the number of candidate pairs or the length of the texts.
VERIFY_CHUNK_SHINGLES = 16_000_000


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
    """Rows whose content can be compared (non-empty text, decodable non-empty image)."""
    if signals.modality == "text":
        return np.asarray(signals.column("n_chars").to_numpy(zero_copy_only=False)) > 0
    ok = np.asarray(signals.column("error").is_null())
    return ok


def exact_key_column(signals: Signals) -> pa.ChunkedArray:
    """The column whose equality means exact duplicate content."""
    return signals.column("norm_hash" if signals.modality == "text" else "pixel_hash")


def exact_groups(signals: Signals, rank: np.ndarray) -> ExactGroups:
    """Group rows with identical normalised content; invalid rows get -1.

    The representative of a group is its row of lowest ``rank`` (see ``representative_rank``).
    """
    keys = exact_key_column(signals)
    valid = valid_content_mask(signals)
    n = len(valid)
    codes = pc.dictionary_encode(keys).combine_chunks()
    idx = np.asarray(codes.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    idx = np.where(valid, idx, len(codes.dictionary))
    best = np.full(len(codes.dictionary) + 1, n, dtype=np.int64)
    np.minimum.at(best, idx[valid], rank[valid])
    order = np.argsort(rank, kind="stable")
    group = np.where(valid, order[np.minimum(best[idx], n - 1)], -1)
    return ExactGroups(group, keys)


def representative_rank(dataset: Dataset) -> np.ndarray:
    """A rank per row: records of earlier splits (train, then val, then test) first, then row order.

    Representatives of duplicate groups are chosen by this rank, so the later copy (e.g. the test
    record) is the one reported.
    """
    n = dataset.num_rows
    splits = dataset.splits()
    if not splits:
        return np.arange(n, dtype=np.int64)
    split_rank = np.array([SPLIT_ORDER.get(s, 1) if s is not None else 3 for s in splits], dtype=np.int64)
    order = np.lexsort((np.arange(n), split_rank))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def normalized_texts(dataset: Dataset, rows: np.ndarray) -> list[str]:
    """Normalised text of the given rows (recomputed on demand, cheaper than storing it)."""
    from curata.signals.text import normalize_text

    values = dataset.take("text", rows).to_pylist()
    return [normalize_text(str(v)) if v is not None else "" for v in values]


def text_near_pairs(context: Context, reps: np.ndarray) -> NearPairs:
    """MinHash-LSH candidates among ``reps``, verified by exact Jaccard of shingle sets."""
    from curata.lsh import candidate_pairs, jaccard_of_pairs
    from curata.signals.text import shingle_hashes

    signals: Signals = context.signals["data"]
    settings = context.settings["signals"].minhash
    keys_col = signals.column("band_keys").combine_chunks()
    bands = keys_col.type.list_size
    all_keys = np.asarray(keys_col.values.to_numpy(zero_copy_only=False)).reshape(-1, bands)
    cand = candidate_pairs(all_keys[reps])
    del all_keys
    n_chars = np.asarray(signals.column("n_chars").to_numpy(zero_copy_only=False))[reps]
    kept_pairs: list[np.ndarray] = [np.empty((0, 2), np.int64)]
    kept_sims: list[np.ndarray] = [np.empty(0)]
    # Verify in chunks so the shingle sets held at once stay bounded.
    for part in verify_chunks(cand, n_chars):
        chunk = cand[part]
        involved = np.unique(chunk)
        hashes, offsets = shingle_hashes(normalized_texts(context.dataset, reps[involved]), settings)
        jac = jaccard_of_pairs(hashes, offsets, np.searchsorted(involved, chunk))
        keep = jac >= settings.min_jaccard
        kept_pairs.append(reps[chunk[keep]])
        kept_sims.append(jac[keep])
    return NearPairs(np.concatenate(kept_pairs), np.concatenate(kept_sims))


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
    rank: np.ndarray = context.shared("rank", lambda: representative_rank(context.dataset))
    return rank


def shared_exact(context: Context) -> ExactGroups:
    """Exact groups of the audited data, computed once per run."""
    groups: ExactGroups = context.shared(
        "exact_groups", lambda: exact_groups(context.signals["data"], shared_rank(context))
    )
    return groups


def shared_near(context: Context) -> NearPairs:
    """Near pairs of the audited data, computed once per run."""

    def compute() -> NearPairs:
        reps = shared_exact(context).representatives()
        if context.dataset.modality == "text":
            return text_near_pairs(context, reps)
        return image_near_pairs(context, reps)

    near: NearPairs = context.shared("near_pairs", compute)
    return near


def shared_clusters(context: Context) -> DuplicateClusters:
    """Clusters of exact and near duplicates, computed once per run."""

    def compute() -> DuplicateClusters:
        exact = shared_exact(context)
        near = shared_near(context)
        n = len(exact.group)
        rows = np.arange(n)
        members = exact.group >= 0
        exact_pairs = np.stack([exact.group[members], rows[members]], axis=1)
        exact_pairs = exact_pairs[exact_pairs[:, 0] != exact_pairs[:, 1]]
        pairs = np.concatenate([exact_pairs, near.pairs]) if len(near.pairs) else exact_pairs
        labels = clusters_from_pairs(n, pairs)
        rank = shared_rank(context)
        best = np.full(n, n, dtype=np.int64)
        np.minimum.at(best, labels, rank)
        order = np.argsort(rank, kind="stable")
        cluster = np.where(members, order[np.minimum(best[labels], n - 1)], -1)
        sims = {
            (int(min(a, b)), int(max(a, b))): float(s)
            for (a, b), s in zip(near.pairs.tolist(), near.similarity.tolist(), strict=True)
        }
        threshold = float(near.similarity.min()) if len(near.similarity) else 1.0
        return DuplicateClusters(cluster, exact.group, sims, threshold)

    clusters: DuplicateClusters = context.shared("clusters", compute)
    return clusters
