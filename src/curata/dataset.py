"""The Dataset: an immutable Arrow table of records plus the role each column plays."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

RoleName = Literal["id", "text", "image", "label", "split", "license", "source"]
#: Roles every dataset reports (None when no column plays them).
CORE_ROLE_NAMES: tuple[RoleName, ...] = ("id", "text", "image", "label", "split")
#: Per-record metadata roles (licence and provenance), reported only when a column plays them.
METADATA_ROLE_NAMES: tuple[RoleName, ...] = ("license", "source")
ROLE_NAMES: tuple[RoleName, ...] = CORE_ROLE_NAMES + METADATA_ROLE_NAMES

#: Canonical split names; a split value is mapped to one of these when it is recognised.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
#: Later splits win when a leak is reported (test, else val).
SPLIT_ORDER: dict[str, int] = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Roles:
    """Which column plays which role; ``None`` when the data has no such column."""

    id: str | None = None
    text: str | None = None
    image: str | None = None
    label: str | None = None
    split: str | None = None
    license: str | None = None
    source: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """Return the roles as a plain mapping (role -> column name or None).

        The core roles are always present; ``license`` and ``source`` only when a column plays
        them, so data without licence metadata reads as it did before those roles existed.
        """
        out: dict[str, str | None] = {name: getattr(self, name) for name in CORE_ROLE_NAMES}
        out.update({name: getattr(self, name) for name in METADATA_ROLE_NAMES if getattr(self, name)})
        return out

    def merged(self, **overrides: str | None) -> Roles:
        """Return a copy with the given roles replaced where the override is not None."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class ParquetContent:
    """A content column (text or image) left in its Parquet files and read by row groups on demand.

    The per-record passes stream it batch by batch and the checks fetch the few rows they compare,
    so the audit never holds the whole column in memory.
    """

    files: tuple[Path, ...]
    column: str
    #: The pyarrow file system holding ``files`` (None: the local one).
    filesystem: Any = None
    #: What keeps ``files`` when they are Parquet copies of text-format source files, made on this
    #: machine (``curata.io.staging.Staged``); None when they are the source's own files.
    staged: Any = field(default=None, compare=False, repr=False)
    #: Decoded row groups kept for repeated ``take`` calls, up to ``cache_bytes`` in all.
    cache_bytes: int = 256 << 20
    _cache: OrderedDict[int, pa.Array] = field(default_factory=OrderedDict, compare=False, repr=False)

    def _group_values(self, g: int, readers: dict[Path, Any]) -> pa.Array:
        """Row group ``g``'s values, from the bounded cache when it was read recently."""
        import pyarrow.parquet as pq

        cached = self._cache.get(g)
        if cached is not None:
            self._cache.move_to_end(g)
            return cached
        path, index = self._row_groups[0][g]
        reader = readers.setdefault(path, pq.ParquetFile(str(path), filesystem=self.filesystem))
        values = reader.read_row_group(index, columns=[self.column]).column(0).combine_chunks()
        self._cache[g] = values
        while len(self._cache) > 1 and sum(v.nbytes for v in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        return values

    @cached_property
    def _row_groups(self) -> tuple[list[tuple[Path, int]], np.ndarray]:
        """Every (file, row group) in order, and the first row of each (plus the total at the end)."""
        import pyarrow.parquet as pq

        groups: list[tuple[Path, int]] = []
        sizes: list[int] = []
        for path in self.files:
            meta = pq.ParquetFile(str(path), filesystem=self.filesystem).metadata
            for i in range(meta.num_row_groups):
                groups.append((path, i))
                sizes.append(meta.row_group(i).num_rows)
        starts = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=starts[1:])
        return groups, starts

    @property
    def num_rows(self) -> int:
        """Rows in all files together."""
        return int(self._row_groups[1][-1])

    def batches(self, batch_size: int) -> Iterator[pa.Array]:
        """Yield the column in file order, ``batch_size`` values at a time."""
        import pyarrow.parquet as pq

        for path in self.files:
            # pre_buffer (pyarrow's default) prefetches the column chunks of every row group the
            # iterator will read: the whole compressed column of the file, held until the file is
            # done (+230 MiB for 1M short texts, 2.2 GiB for 10M). Without it, one row group at a time.
            reader = pq.ParquetFile(
                str(path), pre_buffer=False, buffer_size=1 << 22, filesystem=self.filesystem
            )
            for batch in reader.iter_batches(batch_size=batch_size, columns=[self.column]):
                yield batch.column(0)

    def take(self, rows: np.ndarray) -> pa.Array:
        """Return the values of ``rows`` (in the order given), reading only the row groups holding them."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self._row_groups[1]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        group_of = np.searchsorted(starts, sorted_rows, side="right") - 1
        pieces: list[pa.Array] = []
        readers: dict[Path, Any] = {}
        bounds = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1], True])
        for a, b in itertools.pairwise(bounds):
            g = int(group_of[a])
            values = self._group_values(g, readers)
            pieces.append(values.take(pa.array(sorted_rows[a:b] - starts[g])))
        if not pieces:
            return pa.array([], pa.string())
        combined = pa.concat_arrays(pieces)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return combined.take(pa.array(inverse))

    def read_all(self) -> pa.ChunkedArray:
        """The whole column (loads it into memory; the audit itself does not need this)."""
        return pa.chunked_array(list(self.batches(1 << 16)))


@dataclass(frozen=True)
class Dataset:
    """Records to audit: ``table`` (one row per record), ``roles`` and stable ``record_ids``.

    ``kind`` is ``"tabular"`` for Parquet/CSV/JSONL/Hugging Face data and ``"images"`` for an image
    folder. For image data the ``image`` role column holds either encoded bytes or a path relative
    to ``root``. Source files are never modified. When ``content`` is set, the text or image column
    it names is not in ``table`` but streamed from the source Parquet files (see ``ParquetContent``).
    """

    table: pa.Table
    roles: Roles
    record_ids: pa.Array
    kind: Literal["tabular", "images"]
    root: Path
    source: str
    description: dict[str, Any] = field(default_factory=dict)
    content: ParquetContent | None = None

    @property
    def num_rows(self) -> int:
        """Number of records."""
        return int(self.table.num_rows)

    @property
    def modality(self) -> Literal["text", "image", "none"]:
        """The content the checks look at: text, image, or none (ids and labels only)."""
        if self.roles.image is not None:
            return "image"
        if self.roles.text is not None:
            return "text"
        return "none"

    def column(self, role: RoleName) -> pa.ChunkedArray | None:
        """Return the column playing ``role``, or None when no column does."""
        name = getattr(self.roles, role)
        if name is None:
            return None
        if self._streamed(name):
            assert self.content is not None
            return self.content.read_all()
        return self.table.column(name)

    def streamed_content(self, role: RoleName) -> ParquetContent | None:
        """The source files the column playing ``role`` is streamed from, or None when it is in ``table``."""
        name = getattr(self.roles, role)
        return self.content if name is not None and self._streamed(name) else None

    def _streamed(self, name: str) -> bool:
        """Whether column ``name`` is read from the source files rather than from ``table``."""
        return (
            self.content is not None and name == self.content.column and name not in self.table.column_names
        )

    def content_batches(self, role: RoleName, batch_size: int) -> Iterator[pa.Array]:
        """Yield the column playing ``role`` in row order, ``batch_size`` values at a time (streamed
        from the source files when the column was left there)."""
        name = getattr(self.roles, role)
        if name is None:
            return
        if self._streamed(name):
            assert self.content is not None
            yield from self.content.batches(batch_size)
            return
        for chunk in self.table.column(name).chunks:
            for start in range(0, len(chunk), batch_size):
                yield chunk.slice(start, batch_size)

    def take(self, role: RoleName, rows: np.ndarray) -> pa.Array:
        """Values of the column playing ``role`` at ``rows`` (reading only what holds them)."""
        name = getattr(self.roles, role)
        if name is None:
            raise KeyError(f"no column plays the {role} role")
        if self._streamed(name):
            assert self.content is not None
            return self.content.take(rows)
        return self.table.column(name).take(pa.array(np.asarray(rows, dtype=np.int64))).combine_chunks()

    def labels(self) -> list[str | None]:
        """Labels as strings (None where missing); empty list when there is no label role."""
        return self._labels

    @cached_property
    def _labels(self) -> list[str | None]:
        col = self.column("label")
        if col is None:
            return []
        return _map_distinct(col, lambda v: str(v))

    def splits(self) -> list[str | None]:
        """Split names, canonicalised (train/val/test) where recognised; [] without a split role."""
        return self._splits

    @cached_property
    def _splits(self) -> list[str | None]:
        col = self.column("split")
        if col is None:
            return []
        return _map_distinct(col, _canonical_split)

    def role_codes(self, role: Literal["label", "split"]) -> tuple[np.ndarray, list[str]]:
        """Each row's label or split as a code into the distinct values returned (as ``labels()``
        and ``splits()`` give them; -1 where missing), without a Python list of every row.

        Made chunk by chunk into an ``outofcore.row_array`` (file-backed past
        ``max_in_memory_rows`` rows). Without the role: an empty array and no values.
        """
        import pyarrow.compute as pc

        from curata import outofcore

        col = self.column(role)
        if col is None:
            return np.zeros(0, np.int32), []
        fn: Callable[[object], str | None] = _canonical_split if role == "split" else str
        codes = outofcore.row_array(len(col), np.int32)
        index: dict[str, int] = {}
        offset = 0
        for chunk in col.chunks:
            for lo, hi in outofcore.row_chunks(len(chunk)):
                encoded = pc.dictionary_encode(chunk.slice(lo, hi - lo))
                mapped = [fn(v) for v in encoded.dictionary.to_pylist()]
                local = np.array(
                    [-1 if v is None else index.setdefault(v, len(index)) for v in mapped] + [-1]
                )
                at = pc.fill_null(encoded.indices, len(local) - 1).to_numpy(zero_copy_only=False)
                codes[offset + lo : offset + hi] = local[np.asarray(at, dtype=np.int64)]
                outofcore.release_rows(codes, offset + lo, offset + hi)
            offset += len(chunk)
        return codes, list(index)


def _canonical_split(value: object) -> str | None:
    """A split name canonicalised (train/val/test where recognised); None when blank."""
    s = str(value).strip()
    return SPLIT_ALIASES.get(s.lower(), s) if s else None


def _map_distinct(col: pa.ChunkedArray, fn: Callable[[object], str | None]) -> list[str | None]:
    """Apply ``fn`` once per distinct value of ``col`` (nulls stay None) and spread the results."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(col).combine_chunks()
    mapped = np.array([*(fn(v) for v in encoded.dictionary.to_pylist()), None], dtype=object)
    # Indices as numpy (a null points at the trailing None): no Python int per row on the way.
    indices = pc.fill_null(encoded.indices, len(mapped) - 1).to_numpy(zero_copy_only=False)
    values: list[str | None] = mapped[indices].tolist()
    return values


def _same_values_buffer(column: pa.ChunkedArray, ids: pa.Array) -> bool:
    """Whether ``column`` is ``ids`` itself (one chunk on the same data buffer, as
    ``curata.io.roles`` makes a string id column that holds the record ids)."""
    if column.num_chunks != 1 or column.type != ids.type or len(column) != len(ids):
        return False
    chunk = column.chunk(0)

    def addresses(arr: pa.Array) -> list[int | None]:
        return [None if b is None else b.address for b in arr.buffers()]

    return chunk.offset == ids.offset and addresses(chunk) == addresses(ids)


def map_to_file(dataset: Dataset, folder: Path | None) -> Dataset:
    """``dataset`` with its table (every column but streamed content) and its record ids moved to
    memory-mapped Arrow files in ``folder`` (the system's temporary folder when None).

    The columns are then pages of files that the system reads when they are used and may drop
    again, not memory the run holds: a run over millions of records keeps its ids, labels and
    splits on disk, as it does its signals. The files are unlinked at once (the mappings keep
    their data while the dataset lives). Values, types and row order are unchanged.
    """
    from dataclasses import replace

    from curata import outofcore

    ids = dataset.record_ids
    id_table = pa.table({"id": ids})
    mapped_ids = outofcore.spill_table([id_table], id_table.schema, folder).column(0)
    id_array = mapped_ids.chunk(0) if mapped_ids.num_chunks == 1 else mapped_ids.combine_chunks()
    table = dataset.table
    shared = [i for i, c in enumerate(table.columns) if _same_values_buffer(c, ids)]
    rest = table.drop_columns([table.column_names[i] for i in shared])
    # Columns read straight into a mapped file (large Parquet data: see ``curata.io.tabular``) stay.
    copy = rest.num_columns and not outofcore.is_mapped(rest)
    mapped = outofcore.spill_table([rest], rest.schema, folder) if copy else rest
    for i in shared:
        mapped = mapped.add_column(i, table.field(i), pa.chunked_array([id_array]))
    return replace(dataset, table=mapped.replace_schema_metadata(table.schema.metadata), record_ids=id_array)
