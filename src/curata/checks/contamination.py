"""Contamination: records of the audited data that also appear in a reference dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, register
from curata.checks.groups import (
    context_engine,
    exact_key_column,
    normalized_texts,
    phash_codes,
    valid_content_mask,
    workspace_temp,
)
from curata.dataset import Dataset
from curata.errors import ConfigError
from curata.signals.pipeline import Signals


@dataclass(frozen=True)
class ContaminationSettings:
    """How records are matched against references.

    ``modes`` for text: ``exact`` (normalised text), ``near`` (MinHash Jaccard), ``ngram`` (a record
    shares word n-grams with a reference record; with ``min_ngram_overlap=0`` any shared n-gram
    counts, the GPT-3 13-gram rule). Images always use exact pixels and perceptual hashes.
    """

    modes: tuple[str, ...] = ("exact", "near", "ngram")
    ngram: int = 13
    min_ngram_overlap: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.modes) - {"exact", "near", "ngram"}
        if unknown:
            raise ConfigError(f"unknown contamination mode(s) {sorted(unknown)}: use exact, near, ngram")
        if self.ngram < 1:
            raise ConfigError(f"contamination n-gram size must be >= 1, got {self.ngram}")
        if not 0.0 <= self.min_ngram_overlap < 1.0:
            raise ConfigError(f"min n-gram overlap must be in [0, 1), got {self.min_ngram_overlap}")


@dataclass
class _Match:
    ref_row: int
    score: float
    mode: str
    detail: str


@register
class ContaminationCheck(Check):
    """Records matching a record of a reference dataset (e.g. a benchmark's test set)."""

    name = "contamination"
    description = "Records that also appear (exactly, nearly, or by shared n-grams) in a reference dataset."

    def applies(self, context: Context) -> str | None:
        """Needs at least one reference with the same kind of content."""
        if not context.references:
            return "no --reference given"
        if context.dataset.modality == "none":
            return "no text or image column"
        return None

    def run(self, context: Context) -> pa.Table:
        """One row per contaminated record, naming the matching reference record."""
        settings: ContaminationSettings = context.settings["contamination"]
        data_sig: Signals = context.signals["data"]
        ids = context.record_ids
        out = FindingsBuilder(self.name)
        for ref_index, (ref, ref_signals) in enumerate(context.references, start=1):
            ref_sig: Signals = ref_signals["data"]
            if ref_sig.modality != data_sig.modality:
                raise ConfigError(
                    f"reference {ref.source} holds {ref_sig.modality}, the data holds {data_sig.modality}"
                )
            matches = _exact_matches(context, ref_sig)
            if data_sig.modality == "text":
                if "near" in settings.modes:
                    _merge(matches, _text_near_matches(context, ref, ref_sig))
                if "ngram" in settings.modes:
                    _merge(matches, _ngram_matches(context.dataset, ref, settings))
                if "exact" not in settings.modes:
                    matches = {r: m for r, m in matches.items() if m.mode != "exact"}
            else:
                _merge(matches, _image_near_matches(context, ref_sig))
            ref_ids = ref.record_ids.to_pylist()
            label = f"reference {ref_index}" if len(context.references) > 1 else "the reference"
            for row in sorted(matches):
                m = matches[row]
                out.add(
                    ids[row],
                    related_id=str(ref_ids[m.ref_row]),
                    score=m.score,
                    severity="error",
                    message=f"{m.detail} record {ref_ids[m.ref_row]} of {label} ({ref.source})",
                    evidence={"mode": m.mode, "reference": ref.source, "reference_index": ref_index},
                )
        return out.table()


def _merge(into: dict[int, _Match], new: dict[int, _Match]) -> None:
    for row, m in new.items():
        if row not in into or m.score > into[row].score:
            into[row] = m


def _exact_matches(context: Context, ref_sig: Signals) -> dict[int, _Match]:
    """Records whose content key equals a valid reference record's; each names the first such one.

    An engine join: the reference keys then the data keys go through ``group_representatives``
    with the reference rows ranked first (in row order), so a data row whose group is represented
    by a reference row matches that row, the lowest valid reference row with its key.
    """
    from curata import outofcore

    data_sig: Signals = context.signals["data"]
    data_keys = exact_key_column(data_sig)
    ref_keys = exact_key_column(ref_sig)
    if ref_keys.type != data_keys.type:
        ref_keys = ref_keys.cast(data_keys.type)
    n_ref = len(ref_keys)
    keys = pa.chunked_array([*ref_keys.chunks, *data_keys.chunks], type=data_keys.type)
    valid = np.concatenate([valid_content_mask(ref_sig), valid_content_mask(data_sig)])
    rank = np.arange(len(keys), dtype=np.int64)
    with outofcore.configured(**workspace_temp(context)):
        group = context_engine(context).group_representatives(keys, valid, rank)[n_ref:]
    what = "identical text to" if data_sig.modality == "text" else "identical pixels to"
    matched = np.flatnonzero((group >= 0) & (group < n_ref))
    return {int(row): _Match(int(group[row]), 1.0, "exact", what) for row in matched}


def _band_key_matrix(signals: Signals) -> np.ndarray:
    col = signals.column("band_keys").combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False)).reshape(-1, col.type.list_size)


def _text_near_matches(context: Context, ref: Dataset, ref_sig: Signals) -> dict[int, _Match]:
    from curata.lsh import cross_candidate_pairs, jaccard_of_pairs
    from curata.signals.text import shingle_hashes

    settings = context.settings["signals"].minhash
    data_sig: Signals = context.signals["data"]
    data_rows = np.flatnonzero(valid_content_mask(data_sig))
    ref_rows = np.flatnonzero(valid_content_mask(ref_sig))
    cand = cross_candidate_pairs(_band_key_matrix(data_sig)[data_rows], _band_key_matrix(ref_sig)[ref_rows])
    if len(cand) == 0:
        return {}
    a_rows, a_local = np.unique(data_rows[cand[:, 0]], return_inverse=True)
    b_rows, b_local = np.unique(ref_rows[cand[:, 1]], return_inverse=True)
    texts = normalized_texts(context.dataset, a_rows) + normalized_texts(ref, b_rows)
    hashes, offsets = shingle_hashes(texts, settings)
    local_pairs = np.stack([a_local.ravel(), b_local.ravel() + len(a_rows)], axis=1)
    jac = jaccard_of_pairs(hashes, offsets, local_pairs)
    out: dict[int, _Match] = {}
    for (a, b), j in zip(local_pairs.tolist(), jac.tolist(), strict=True):
        if j < settings.min_jaccard:
            continue
        row = int(a_rows[a])
        if row not in out or j > out[row].score:
            out[row] = _Match(int(b_rows[b - len(a_rows)]), j, "near", f"near duplicate (Jaccard {j:.2f}) of")
    return out


def _ngram_matches(data: Dataset, ref: Dataset, settings: ContaminationSettings) -> dict[int, _Match]:
    from curata.signals.text import word_ngram_hashes

    n = settings.ngram
    ref_hashes, ref_offsets = word_ngram_hashes(normalized_texts(ref, np.arange(ref.num_rows)), n)
    if len(ref_hashes) == 0:
        return {}
    ref_doc = np.repeat(np.arange(ref.num_rows), np.diff(ref_offsets))
    order = np.argsort(ref_hashes, kind="stable")
    ref_sorted, ref_doc_sorted = ref_hashes[order], ref_doc[order]
    out: dict[int, _Match] = {}
    chunk = 50_000
    for start in range(0, data.num_rows, chunk):
        rows = np.arange(start, min(start + chunk, data.num_rows))
        hashes, offsets = word_ngram_hashes(normalized_texts(data, rows), n)
        if len(hashes) == 0:
            continue
        pos = np.searchsorted(ref_sorted, hashes)
        pos_clipped = np.minimum(pos, len(ref_sorted) - 1)
        hit = ref_sorted[pos_clipped] == hashes
        # The padding keeps reduceat's start indices in range when trailing documents are empty.
        counts = np.add.reduceat(np.append(hit.astype(np.int64), 0), offsets[:-1])
        sizes = np.diff(offsets)
        for local in np.flatnonzero((sizes > 0) & (counts > 0)):
            overlap = float(counts[local]) / float(sizes[local])
            if overlap <= settings.min_ngram_overlap and settings.min_ngram_overlap > 0:
                continue
            lo, hi = offsets[local], offsets[local + 1]
            docs = ref_doc_sorted[pos_clipped[lo:hi][hit[lo:hi]]]
            ref_row = int(np.bincount(docs).argmax())
            out[int(rows[local])] = _Match(
                ref_row,
                0.5 + 0.5 * overlap,
                "ngram",
                f"shares {int(counts[local])} of its {int(sizes[local])} word {n}-grams ({overlap:.0%}) with",
            )
    return out


def _image_near_matches(context: Context, ref_sig: Signals) -> dict[int, _Match]:
    from curata.signals.image import cross_near_duplicate_pairs

    data_sig: Signals = context.signals["data"]
    data_rows = np.flatnonzero(valid_content_mask(data_sig))
    ref_rows = np.flatnonzero(valid_content_mask(ref_sig))
    if len(data_rows) == 0 or len(ref_rows) == 0:
        return {}
    pairs, sim = cross_near_duplicate_pairs(
        phash_codes(data_sig, data_rows), phash_codes(ref_sig, ref_rows), context.settings["signals"].image
    )
    out: dict[int, _Match] = {}
    for (a, b), s in zip(np.asarray(pairs).tolist(), np.asarray(sim).tolist(), strict=True):
        row = int(data_rows[a])
        if row not in out or s > out[row].score:
            out[row] = _Match(int(ref_rows[b]), float(s), "near", f"near duplicate (similarity {s:.2f}) of")
    return out
