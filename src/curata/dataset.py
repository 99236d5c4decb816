"""The Dataset: an immutable Arrow table of records plus the role each column plays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

RoleName = Literal["id", "text", "image", "label", "split"]
ROLE_NAMES: tuple[RoleName, ...] = ("id", "text", "image", "label", "split")

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

    def as_dict(self) -> dict[str, str | None]:
        """Return the roles as a plain mapping (role -> column name or None)."""
        return {name: getattr(self, name) for name in ROLE_NAMES}

    def merged(self, **overrides: str | None) -> Roles:
        """Return a copy with the given roles replaced where the override is not None."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Dataset:
    """Records to audit: ``table`` (one row per record), ``roles`` and stable ``record_ids``.

    ``kind`` is ``"tabular"`` for Parquet/CSV/JSONL/Hugging Face data and ``"images"`` for an image
    folder. For image data the ``image`` role column holds either encoded bytes or a path relative
    to ``root``. Source files are never modified.
    """

    table: pa.Table
    roles: Roles
    record_ids: pa.Array
    kind: Literal["tabular", "images"]
    root: Path
    source: str
    description: dict[str, Any] = field(default_factory=dict)

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
        return None if name is None else self.table.column(name)

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

        def canonical(v: object) -> str | None:
            s = str(v).strip()
            return SPLIT_ALIASES.get(s.lower(), s) if s else None

        return _map_distinct(col, canonical)


def _map_distinct(col: pa.ChunkedArray, fn: Callable[[object], str | None]) -> list[str | None]:
    """Apply ``fn`` once per distinct value of ``col`` (nulls stay None) and spread the results."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(col).combine_chunks()
    mapped = [fn(v) for v in encoded.dictionary.to_pylist()]
    indices = encoded.indices.to_pylist()
    return [None if i is None else mapped[i] for i in indices]
