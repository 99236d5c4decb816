"""Check contract: a check reads a Context and returns Findings (one table for all checks)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import numpy as np
import pyarrow as pa

from curata.dataset import Dataset

Severity = Literal["info", "warning", "error"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}

#: Columns of ``findings.parquet`` in order; ``evidence`` is a JSON object per row.
FINDINGS_SCHEMA = pa.schema(
    [
        ("check", pa.string()),
        ("record_id", pa.string()),
        ("related_id", pa.string()),
        ("group_id", pa.string()),
        ("score", pa.float64()),
        ("severity", pa.string()),
        ("message", pa.string()),
        ("evidence", pa.string()),
    ]
)


class RecordIds(Sequence[str]):
    """The dataset's record ids, read from its Arrow array when asked for.

    ``ids[row]`` is one id and ``ids.take(rows)`` several: a check looks up the ids of the records
    it reports, and no Python list of every id is made (at ~65 bytes a string, that list would be
    the largest object of an audit of millions of records). Iteration goes by slices.
    """

    _SLICE = 65_536

    def __init__(self, array: pa.Array | pa.ChunkedArray) -> None:
        self._array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array

    def __len__(self) -> int:
        return len(self._array)

    @overload
    def __getitem__(self, index: int | np.integer[Any]) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | np.integer[Any] | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [str(v) for v in self._array[index].to_pylist()]
        return str(self._array[int(index)].as_py())

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._array), self._SLICE):
            yield from (str(v) for v in self._array.slice(start, self._SLICE).to_pylist())

    def take(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The ids of ``rows``, in their order."""
        return [str(v) for v in self._array.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()]


@dataclass
class FindingsBuilder:
    """Collects finding rows for one check and turns them into a table."""

    check: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        record_id: str,
        *,
        score: float,
        severity: Severity,
        message: str,
        related_id: str | None = None,
        group_id: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """Add one finding; ``score`` is clipped to [0, 1]."""
        self.rows.append(
            {
                "check": self.check,
                "record_id": record_id,
                "related_id": related_id,
                "group_id": group_id,
                "score": float(min(1.0, max(0.0, score))),
                "severity": severity,
                "message": message,
                "evidence": json.dumps(evidence, sort_keys=True, default=str) if evidence else None,
            }
        )

    def table(self) -> pa.Table:
        """Return the collected rows as a table with ``FINDINGS_SCHEMA``."""
        return findings_table(self.rows)


def findings_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Build a findings table from row dicts (missing columns become null)."""
    return pa.Table.from_pylist(list(rows), schema=FINDINGS_SCHEMA)


def empty_findings() -> pa.Table:
    """A findings table with no rows."""
    return FINDINGS_SCHEMA.empty_table()


#: A check's findings of at least this many rows are kept in a memory-mapped spill file.
SPILL_FINDINGS_ROWS = 100_000


def spill_folder(context: Context) -> Path | None:
    """Where the run's spill files go: the workspace's ``tmp`` folder (None: the system's)."""
    workspace = context.settings.get("workspace")
    return Path(workspace) / "tmp" if workspace is not None else None


def chunked_findings(
    context: Context, total: int, make: Callable[[int, int], pa.Table], chunk: int
) -> pa.Table:
    """The findings ``make(lo, hi)`` over chunks of ``chunk`` rows, ``total`` in all.

    Past ``SPILL_FINDINGS_ROWS`` rows each chunk goes to a spill file as it is made and the result
    is that file, memory-mapped: a check with millions of findings never holds them all.
    """
    from curata import outofcore

    parts = (make(lo, min(total, lo + chunk)) for lo in range(0, total, chunk))
    if total >= SPILL_FINDINGS_ROWS:
        return outofcore.spill_table(parts, FINDINGS_SCHEMA, spill_folder(context))
    held = list(parts)
    return pa.concat_tables(held) if held else empty_findings()


def concat_findings(tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate findings tables of several checks."""
    parts = [t for t in tables if t.num_rows]
    return pa.concat_tables(parts) if parts else empty_findings()


@dataclass
class Context:
    """Everything a check may read: the dataset, computed signals, references and settings.

    ``signals`` maps a signal name to an array aligned with the dataset's rows (see
    ``curata.signals``). ``references`` holds each ``--reference`` dataset with its own signals.
    ``cache`` lets checks share cross-record work (e.g. duplicate clusters) within one run.
    """

    dataset: Dataset
    signals: dict[str, Any]
    references: list[tuple[Dataset, dict[str, Any]]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def record_ids(self) -> RecordIds:
        """Record ids aligned with rows, read on demand (no list of every id is made)."""
        if "record_ids" not in self.cache:
            self.cache["record_ids"] = RecordIds(self.dataset.record_ids)
        ids: RecordIds = self.cache["record_ids"]
        return ids

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """Return ``cache[key]``, computing it once per run."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


class Check:
    """A check: ``name`` (used in findings), the ``needs`` it has, and ``run(context)``.

    Subclasses are pure: no I/O, no printing. ``applies`` says whether the dataset has what the
    check needs; when it returns a reason string the check is skipped and the report says why.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def applies(self, context: Context) -> str | None:
        """Return None when the check can run, else a one-line reason it is skipped."""
        return None

    def run(self, context: Context) -> pa.Table:  # pragma: no cover - abstract
        """Return this check's findings."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Check]] = {}


def register(cls: type[Check]) -> type[Check]:
    """Class decorator adding a check to the registry under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def registered_checks() -> dict[str, type[Check]]:
    """All registered checks by name, in registration order."""
    return dict(_REGISTRY)


def clusters_from_pairs(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components over ``pairs`` (m x 2 row indices); returns a label per row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    data = np.ones(len(pairs), dtype=np.int8)
    graph = coo_matrix((data, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=np.int64)
