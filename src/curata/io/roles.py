"""Role detection and the final assembly of a loaded table into a ``Dataset``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata import outofcore
from curata.dataset import (
    CORE_ROLE_NAMES,
    METADATA_ROLE_NAMES,
    ROLE_NAMES,
    Dataset,
    ParquetContent,
    RoleName,
    Roles,
)
from curata.errors import InputError

#: Column names (lower-cased) that mark a role, in order of preference.
ID_NAMES: tuple[str, ...] = ("id", "uid", "uuid", "record_id", "key", "_id")
TEXT_NAMES: tuple[str, ...] = ("text", "content", "body", "sentence", "document", "prompt", "question")
IMAGE_NAMES: tuple[str, ...] = ("image", "img", "path", "file", "filepath", "image_path", "filename")
LABEL_NAMES: tuple[str, ...] = (
    "label",
    "labels",
    "class",
    "category",
    "target",
    "y",
    "fine_label",
    "coarse_label",
)
SPLIT_NAMES: tuple[str, ...] = ("split", "subset", "fold", "partition")
LICENSE_NAMES: tuple[str, ...] = ("license", "licence", "license_id", "licence_id", "spdx", "spdx_id")
SOURCE_NAMES: tuple[str, ...] = ("source", "url", "origin", "provenance", "source_url")

#: File extensions (lower case, with the dot) that mark an image file.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
)

#: A string column is "clearly long" text when its mean length reaches this many characters.
LONG_TEXT_MIN_MEAN = 20.0
#: Share of sampled values that must end with an image extension for a path column to count.
IMAGE_PATH_MIN_SHARE = 0.9
#: Values sampled when a column's content decides its role (keeps detection cheap on big tables).
SAMPLE_ROWS = 1000
#: A column named like provenance (``source``, ``url``...) counts only when its values average at
#: most this many words: URLs and source names are short, while a translation pair's ``source``
#: column holds sentences and is content, not provenance.
PROVENANCE_MAX_MEAN_WORDS = 4.0


@dataclass
class Loaded:
    """A table read from DATA plus what the reader learned about it, before roles are settled."""

    table: pa.Table
    format: str
    kind: Literal["tabular", "images"]
    root: Path
    files: list[str]
    skipped_files: int = 0
    #: Roles the layout itself fixes (image folders, DatasetDict splits); detection fills the rest.
    fixed_roles: Roles = field(default_factory=Roles)
    #: Whether columns not fixed by the layout are searched for roles.
    detect: bool = True
    #: Column whose values are the record ids when there is no id role (image folders: ``path``).
    fallback_id_column: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: A content column left in the source Parquet files (not in ``table``) and the role it plays.
    streamed: tuple[RoleName, ParquetContent] | None = None


def has_image_extension(name: str) -> bool:
    """Return whether ``name`` ends with one of the image extensions (case-insensitive)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def is_hf_image_struct(typ: pa.DataType) -> bool:
    """Return whether ``typ`` is the Hugging Face Image feature's storage: struct {bytes, path}."""
    if not pa.types.is_struct(typ):
        return False
    names = {typ.field(i).name for i in range(typ.num_fields)}
    return bool(names) and names <= {"bytes", "path"}


def _is_nested(typ: pa.DataType) -> bool:
    return bool(pa.types.is_nested(typ) or pa.types.is_union(typ))


def _is_stringlike(typ: pa.DataType) -> bool:
    return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ))


def _is_binarylike(typ: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ)
    )


def _sample(col: pa.ChunkedArray) -> list[Any]:
    """Return up to SAMPLE_ROWS non-null values from the start of ``col``."""
    head = col.slice(0, SAMPLE_ROWS * 4).drop_null()
    return [v for v in head.slice(0, SAMPLE_ROWS).to_pylist() if v is not None]


def _decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return ``col`` with dictionary encoding removed (pandas categoricals arrive encoded)."""
    if pa.types.is_dictionary(col.type):
        return pc.cast(col, col.type.value_type)
    return col


def _looks_like_image(col: pa.ChunkedArray) -> bool:
    typ = _decoded(col).type
    if _is_binarylike(typ) or is_hf_image_struct(typ):
        return True
    if _is_stringlike(typ):
        values = _sample(_decoded(col))
        if not values:
            return False
        hits = sum(1 for v in values if has_image_extension(v.split("?", 1)[0]))
        return hits / len(values) >= IMAGE_PATH_MIN_SHARE
    return False


def _looks_like_provenance(col: pa.ChunkedArray) -> bool:
    typ = _decoded(col).type
    if _is_binarylike(typ):
        return False
    if not _is_stringlike(typ):
        return True
    values = _sample(_decoded(col))
    if not values:
        return True
    return sum(len(v.split()) for v in values) / len(values) <= PROVENANCE_MAX_MEAN_WORDS


def _mean_length(col: pa.ChunkedArray) -> float:
    # The head of the column is enough to tell prose from codes, and keeps this cheap on big data.
    lengths = pc.utf8_length(_decoded(col.slice(0, SAMPLE_ROWS * 10)).drop_null())
    mean = pc.mean(lengths).as_py()
    return 0.0 if mean is None else float(mean)


def _by_name(columns: list[str], names: tuple[str, ...], ok: Callable[[str], bool]) -> str | None:
    """Return the column matching the earliest of ``names`` (case-insensitive) that passes ``ok``."""
    for wanted in names:
        exact = [c for c in columns if c == wanted]
        loose = [c for c in columns if c.lower() == wanted and c != wanted]
        for c in exact + loose:
            if ok(c):
                return c
    return None


def detect_roles(table: pa.Table, *, skip: frozenset[str] = frozenset()) -> dict[RoleName, str | None]:
    """Guess which column plays each role from column names and, for text/image, content.

    Columns in ``skip`` are already taken (fixed by the layout or named by the user) and are not
    considered. Detection never raises; a role stays None when nothing fits. The metadata roles
    (``license``, ``source``) appear in the result only when a column plays them.
    """
    columns = [c for c in table.column_names if c not in skip]
    types = {c: _decoded(table.column(c)).type for c in columns}

    def flat(c: str) -> bool:
        return not _is_nested(types[c])

    found: dict[RoleName, str | None] = {}
    found["id"] = _by_name(columns, ID_NAMES, flat)
    found["label"] = _by_name(columns, LABEL_NAMES, flat)
    found["split"] = _by_name(columns, SPLIT_NAMES, flat)
    found["image"] = _by_name(columns, IMAGE_NAMES, lambda c: _looks_like_image(table.column(c)))
    if found["image"] is None:
        # A Hugging Face Image feature is unambiguous whatever the column is called.
        structs = [c for c in columns if is_hf_image_struct(types[c])]
        found["image"] = structs[0] if structs else None
    taken = {v for v in found.values() if v is not None}
    # Licence and provenance columns are claimed before text, so a column of long URLs is never
    # mistaken for the one column of prose.
    metadata: list[tuple[RoleName, tuple[str, ...], Callable[[str], bool]]] = [
        ("license", LICENSE_NAMES, lambda c: flat(c) and not _is_binarylike(types[c])),
        ("source", SOURCE_NAMES, lambda c: flat(c) and _looks_like_provenance(table.column(c))),
    ]
    for role, names, ok in metadata:
        column = _by_name([c for c in columns if c not in taken], names, ok)
        found[role] = column
        if column is not None:
            taken.add(column)
    found["text"] = _by_name(
        [c for c in columns if c not in taken],
        TEXT_NAMES,
        lambda c: flat(c) and not _is_binarylike(types[c]),
    )
    if found["text"] is None:
        # Without a telling name, take the one string column that clearly holds prose.
        long_cols = [
            c
            for c in columns
            if c not in taken
            and _is_stringlike(types[c])
            and _mean_length(table.column(c)) >= LONG_TEXT_MIN_MEAN
        ]
        found["text"] = long_cols[0] if len(long_cols) == 1 else None
    roles = {role: found[role] for role in CORE_ROLE_NAMES}
    roles.update({role: found[role] for role in METADATA_ROLE_NAMES if found[role] is not None})
    return roles


def _available(table: pa.Table) -> str:
    names = table.column_names
    shown = ", ".join(names[:30])
    return shown + (f", ... ({len(names)} columns)" if len(names) > 30 else "")


def _named_column(table: pa.Table, role: RoleName, name: str, source: str) -> str:
    """Return the column the user named for ``role``; a unique case-insensitive match also counts."""
    if name in table.column_names:
        return name
    loose: list[str] = [c for c in table.column_names if c.lower() == name.lower()]
    if len(loose) == 1:
        return loose[0]
    raise InputError(
        f"{source}: no column named '{name}' for the {role} role; available columns: {_available(table)}"
    )


def _dedupe_column_names(table: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """Give blank and repeated column names unique names, since roles refer to columns by name."""
    seen: set[str] = set()
    new_names: list[str] = []
    renamed: dict[str, str] = {}
    for i, name in enumerate(table.column_names):
        base = name if name.strip() else f"column_{i}"
        candidate, n = base, 2
        while candidate in seen:
            candidate, n = f"{base}_{n}", n + 1
        seen.add(candidate)
        new_names.append(candidate)
        if candidate != name:
            renamed[f"#{i} {name!r}"] = candidate
    if renamed:
        table = table.rename_columns(new_names)
    return table, renamed


def _image_struct_to_flat(col: pa.ChunkedArray) -> tuple[pa.ChunkedArray, str, int]:
    """Turn an HF image struct column into encoded bytes (when any row has them) or paths.

    Returns the new column, which field it came from, and how many rows lack that field.
    """
    combined = col.combine_chunks()
    typ = combined.type
    names = [typ.field(i).name for i in range(typ.num_fields)]
    if "bytes" in names:
        data = pc.struct_field(combined, "bytes")
        if data.null_count < len(data):
            return pa.chunked_array([data]), "bytes", data.null_count
    paths = pc.struct_field(combined, "path")
    return pa.chunked_array([pc.cast(paths, pa.string())]), "path", paths.null_count


def _coerce_role(
    table: pa.Table, role: RoleName, name: str, *, explicit: bool, source: str, notes: dict[str, Any]
) -> tuple[pa.Table, bool]:
    """Check and convert the column playing ``role``; return the table and whether the role holds.

    A column the user named that cannot play the role raises InputError; a detected one is
    dropped from the role (and noted) instead, so odd but valid data still loads.
    """
    col = table.column(name)
    idx = table.column_names.index(name)
    typ = col.type
    problem: str | None = None
    if pa.types.is_dictionary(typ):
        col = _decoded(col)
        typ = col.type
        table = table.set_column(idx, name, col)
    if role == "image":
        if is_hf_image_struct(typ):
            flat, part, missing = _image_struct_to_flat(col)
            table = table.set_column(idx, name, flat)
            notes["image_source"] = part
            if missing:
                notes["images_missing"] = missing
        elif not (_is_stringlike(typ) or _is_binarylike(typ) or pa.types.is_null(typ)):
            problem = f"holds {typ}, not image file paths or encoded image bytes"
    elif _is_nested(typ):
        problem = f"holds nested values ({typ}); the {role} column needs one plain value per row"
    elif role == "text" and not _is_stringlike(typ):
        try:
            table = table.set_column(idx, name, pc.cast(col, pa.string()))
        except (pa.ArrowException, ValueError, TypeError):
            problem = f"holds {typ} values that cannot be read as text"
    elif role == "id" and not _is_stringlike(typ):
        try:
            pc.cast(col.slice(0, SAMPLE_ROWS), pa.string())
        except (pa.ArrowException, ValueError, TypeError):
            problem = f"holds {typ} values that cannot be turned into id strings"
    if problem is None:
        return table, True
    if explicit:
        raise InputError(f"{source}: {role} column '{name}' {problem}; name another column")
    notes.setdefault("ignored_role_columns", {})[name] = f"not used as {role}: {problem}"
    return table, False


def _record_ids(table: pa.Table, id_column: str | None, fallback: str | None) -> tuple[pa.Array, int, int]:
    """Return record ids as a string array, how many ids were null or empty, and duplicate count."""
    n = table.num_rows

    def row_numbers() -> pa.Array:
        return pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())

    column = id_column or fallback
    if column is None:
        return row_numbers(), 0, 0
    null_ids = 0

    def chunks() -> Iterator[pa.Array]:
        # Chunk by chunk (the column may be memory-mapped): null or empty ids become row numbers.
        nonlocal null_ids
        null_ids = start = 0
        for chunk in table.column(column).chunks:
            ids = pc.cast(chunk, pa.string())
            missing = pc.fill_null(pc.equal(pc.binary_length(ids), 0), True)
            count = int(pc.sum(missing).as_py() or 0)
            if count:
                numbers = pc.cast(pa.array(np.arange(start, start + len(chunk), dtype=np.int64)), pa.string())
                ids = pc.if_else(missing, numbers, ids)
            null_ids += count
            start += len(chunk)
            yield ids

    # One array; file-backed past ``max_in_memory_rows`` ids (no second copy of the column held).
    ids = outofcore.combined_strings(chunks)
    # Past ``chunk_rows`` ids DuckDB counts them, within its memory limit.
    duplicates = n - outofcore.distinct_count(ids)
    return ids, null_ids, duplicates


def _share_ids(table: pa.Table, column: str | None, record_ids: pa.Array) -> pa.Table:
    """``table`` with its id column replaced by ``record_ids`` when they hold the same values, so
    the ids are held once (a chunked column and its combined copy: ~16 bytes a record twice)."""
    if column is None or column not in table.column_names:
        return table
    col = table.column(column)
    if col.num_chunks < 2 or col.type != record_ids.type or col.null_count or len(col) != len(record_ids):
        return table
    # Same type, no nulls and no empty ids (those become row numbers): the ids are the column.
    if not pc.all(pc.greater(pc.binary_length(col), 0)).as_py():
        return table
    index = table.column_names.index(column)
    return table.set_column(index, table.field(index), pa.chunked_array([record_ids]))


def assemble(loaded: Loaded, overrides: Mapping[RoleName, str | None], source: str) -> Dataset:
    """Settle the roles of ``loaded`` (layout, then user overrides, then detection) into a Dataset."""
    table, renamed = _dedupe_column_names(loaded.table)
    notes: dict[str, Any] = {}
    if renamed:
        notes["renamed_columns"] = renamed
    if table.num_rows == 0:
        raise InputError(f"{source}: no records found; point curata at data with at least one row")

    # "Detected" means not named by the user: fixed by the layout, else found by detection.
    detected: dict[RoleName, str | None] = {role: getattr(loaded.fixed_roles, role) for role in ROLE_NAMES}
    named: dict[RoleName, str] = {}
    for role in ROLE_NAMES:
        name = overrides.get(role)
        if name is not None and not (loaded.streamed is not None and role == loaded.streamed[0]):
            named[role] = _named_column(table, role, name, source)
    if loaded.detect:
        taken = set(named.values()) | {v for v in detected.values() if v is not None}
        if loaded.streamed is not None:
            detected[loaded.streamed[0]] = loaded.streamed[1].column
        found = detect_roles(table, skip=frozenset(taken))
        detected = {role: detected[role] or found.get(role) for role in ROLE_NAMES}
    chosen: dict[RoleName, str | None] = {role: named.get(role, detected[role]) for role in ROLE_NAMES}
    explicit = set(named)
    if loaded.streamed is not None:
        # Checked when the column was left unread: it holds plain strings or bytes.
        streamed_role, content = loaded.streamed
        chosen[streamed_role] = content.column

    for role in ROLE_NAMES:
        name = chosen[role]
        if name is None or (loaded.streamed is not None and role == loaded.streamed[0]):
            continue
        table, keep = _coerce_role(table, role, name, explicit=role in explicit, source=source, notes=notes)
        if not keep:
            chosen[role] = None
    roles = Roles(**chosen)

    record_ids, null_ids, duplicates = _record_ids(table, roles.id, loaded.fallback_id_column)
    table = _share_ids(table, roles.id or loaded.fallback_id_column, record_ids)
    description: dict[str, Any] = {
        "format": loaded.format,
        "files": loaded.files,
        "num_files": len(loaded.files),
        "columns": _columns(table, loaded.streamed[1] if loaded.streamed else None),
        "skipped_files": loaded.skipped_files,
        "detected_roles": dict(detected),
        "null_ids": null_ids,
        "duplicate_ids": duplicates,
    }
    description.update(loaded.extra)
    description.update(notes)
    return Dataset(
        table=table,
        roles=roles,
        record_ids=record_ids,
        kind=loaded.kind,
        root=loaded.root,
        source=source,
        description=description,
        content=None if loaded.streamed is None else loaded.streamed[1],
    )


def _columns(table: pa.Table, streamed: ParquetContent | None) -> list[str]:
    """The data's columns: the table's, and a streamed column in its place in the files' order."""
    if streamed is None:
        return list(table.column_names)
    import pyarrow.parquet as pq

    names = [*table.column_names, streamed.column]
    order = pq.read_schema(str(streamed.files[0]), filesystem=streamed.filesystem).names
    return sorted(names, key=lambda c: (order.index(c) if c in order else len(order), names.index(c)))
