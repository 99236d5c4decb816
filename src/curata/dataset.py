"""The Dataset: an immutable Arrow table of records plus the role each column plays."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
        col = self.column("label")
        if col is None:
            return []
        return [None if v is None else str(v) for v in col.to_pylist()]

    def splits(self) -> list[str | None]:
        """Split names, canonicalised (train/val/test) where recognised; [] without a split role."""
        col = self.column("split")
        if col is None:
            return []
        out: list[str | None] = []
        for v in col.to_pylist():
            if v is None or str(v).strip() == "":
                out.append(None)
            else:
                s = str(v).strip()
                out.append(SPLIT_ALIASES.get(s.lower(), s))
        return out
