"""Read Parquet, CSV/TSV and JSON-lines files, alone or as a folder of same-format shards."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curata import outofcore
from curata.errors import InputError
from curata.io.roles import ID_NAMES, Loaded

#: Extension (lower case) -> format name; a folder must hold one format only.
TABLE_EXTENSIONS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: Compression suffixes pyarrow undoes by itself for text formats (``data.csv.gz``).
COMPRESSION_SUFFIXES: tuple[str, ...] = (".gz", ".bz2", ".zst")
SUPPORTED_HINT = (
    "curata reads .parquet, .csv, .tsv, .jsonl/.ndjson/.json (JSON lines), folders of them, "
    "image folders and Hugging Face save_to_disk folders"
)
#: JSON blocks grow up to this size when a single line is longer than pyarrow's block.
_MAX_JSON_BLOCK = 1 << 30


def brief(exc: BaseException) -> str:
    """Return the first line of an exception's message, trimmed, for one-line error messages."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def table_format(path: Path) -> str | None:
    """Return the table format a file name implies ("parquet", "csv", "tsv", "jsonl") or None."""
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            fmt = TABLE_EXTENSIONS.get(Path(name).suffix)
            # Parquet compresses internally; an outer gzip around it is not something we can read.
            return None if fmt == "parquet" else fmt
    return TABLE_EXTENSIONS.get(Path(name).suffix)


def read_table_file(
    path: Path,
    fmt: str,
    *,
    id_column: str | None = None,
    skip_column: str | None = None,
    staged: Mapping[Path, Path] | None = None,
) -> pa.Table:
    """Read one file of format ``fmt``; any failure becomes an InputError naming the file.

    ``skip_column`` is left unread: a content column streamed later by row groups, from the file
    itself (Parquet) or from its Parquet copy in ``staged`` (CSV/TSV, JSON lines: see
    ``curata.io.staging``).
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty; remove it or point curata at a file with records")
    if staged is not None and path in staged:
        return _read_parquet(staged[path], skip_column)
    if fmt == "parquet":
        return _read_parquet(path, skip_column)
    if fmt in ("csv", "tsv"):
        return _read_csv(path, "\t" if fmt == "tsv" else ",", id_column)
    return _read_jsonl(path)


# --- Parquet -------------------------------------------------------------------------------------


def _read_parquet(path: Path, skip_column: str | None = None) -> pa.Table:
    """The file's columns but ``skip_column``; past ``max_in_memory_rows`` rows read row group by
    row group into a memory-mapped spill file (``outofcore.spill_table``), not into memory."""
    try:
        names = [n for n in pq.read_schema(path).names if n != skip_column]
        with pq.ParquetFile(path) as file:
            large = file.metadata.num_rows > outofcore.current().max_in_memory_rows
            if large and names and file.num_row_groups > 1:
                whole = file.schema_arrow
                schema = pa.schema([whole.field(n) for n in names], metadata=whole.metadata)
                groups = (
                    file.read_row_group(i, columns=names, use_threads=False)
                    for i in range(file.num_row_groups)
                )
                return outofcore.spill_table(groups, schema)
        return pq.read_table(path, columns=names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = brief(exc)
        if "magic bytes" in msg:
            raise InputError(
                f"{path}: not a Parquet file, or truncated (footer missing); re-export it"
            ) from None
        raise InputError(
            f"{path}: cannot read Parquet ({msg}); the file may be corrupt or truncated, re-export it"
        ) from None


# --- CSV -----------------------------------------------------------------------------------------


def csv_options(
    path: Path, delimiter: str, id_column: str | None
) -> tuple[pacsv.ParseOptions, pacsv.ConvertOptions]:
    """How curata parses and converts a CSV/TSV file (pyarrow errors propagate)."""
    # Text datasets often hold multi-line quoted values; without this they split into bad rows.
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    header = pacsv.open_csv(path, parse_options=parse).schema.names
    # Ids like "007" must not turn into the integer 7, so id-like columns stay strings.
    id_like = {c for c in header if c.lower() in ID_NAMES or c == id_column}
    return parse, pacsv.ConvertOptions(column_types={c: pa.string() for c in id_like})


def _read_csv(path: Path, delimiter: str, id_column: str | None) -> pa.Table:
    try:
        parse, convert = csv_options(path, delimiter, id_column)
        return pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _csv_error(path, delimiter, exc) from None


def _csv_error(path: Path, delimiter: str, exc: BaseException) -> InputError:
    """Turn a pyarrow CSV failure into one line; for a bad row, re-read serially to find its line."""
    msg = brief(exc)
    if msg == "Empty CSV file":
        return InputError(f"{path}: file is empty; remove it or point curata at a file with records")
    if "parse error" in msg.lower():
        bad: list[Any] = []

        def handler(row: Any) -> str:
            bad.append(row)
            return "error"

        with contextlib.suppress(pa.ArrowException, OSError, ValueError):
            pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=handler
                ),
            )
        if bad:
            row = bad[0]
            line = _physical_line(path, delimiter, row.number)
            if line is not None:
                where = f"line {line}: "
            elif row.number is not None:
                where = f"row {row.number} (counting the header): "
            else:
                where = ""
            sep = "tab" if delimiter == "\t" else f"'{delimiter}'"
            return InputError(
                f"{path}: {where}expected {row.expected_columns} fields, found {row.actual_columns}; "
                f"fix that row or quote values that contain {sep}"
            )
    if "utf8" in msg.lower() or "utf-8" in msg.lower():
        return InputError(f"{path}: not valid UTF-8 text ({msg}); re-save the file as UTF-8")
    return InputError(f"{path}: cannot read CSV ({msg}); check the file is well-formed CSV")


def _physical_line(path: Path, delimiter: str, record: int | None) -> int | None:
    """Return the file line where CSV record number ``record`` ends (pyarrow counts records).

    Records and lines differ when quoted values span lines or blank lines are skipped.
    """
    if record is None:
        return None
    try:
        with pa.input_stream(str(path), compression="detect") as raw:
            text = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig", newline="")
            reader = csv.reader(text, delimiter=delimiter)
            seen = 0
            for fields in reader:
                if fields:
                    seen += 1
                if seen == record:
                    return reader.line_num
    except (csv.Error, UnicodeDecodeError, pa.ArrowException, OSError):
        return None
    return None


# --- JSON lines ----------------------------------------------------------------------------------


def is_json_array(path: Path) -> bool:
    """Whether ``path`` is a ``.json`` file holding one JSON array (not JSON lines)."""
    return path.name.lower().endswith(".json") and _first_char(path) == "["


def _first_char(path: Path) -> str:
    with pa.input_stream(str(path), compression="detect") as raw:
        head: bytes = raw.read(4096)
    return head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")[:1]


#: Column a reader adds for records it could not parse (the error, null for good records).
BAD_RECORD_COLUMN = "__curata_bad_record__"
#: Column the JSON readers add when a record holds a value of another kind than the rest of its
#: column (e.g. an object where the other records hold strings); dropped by ``read_dataset``.
TYPE_ERROR_COLUMN = "__curata_type_error__"


def _read_jsonl(path: Path) -> pa.Table:
    try:
        if is_json_array(path):
            return _read_json_array(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read ({brief(exc)})") from None
    block = 1 << 20
    while True:
        try:
            table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=block))
            # pyarrow's JSON reader does not check UTF-8; invalid text would fail later, in a check.
            table.validate(full=True)
            return table
        except (pa.ArrowException, OSError, ValueError) as exc:
            if "straddl" in str(exc) and block < _MAX_JSON_BLOCK:
                # A single line longer than the block: retry with bigger blocks.
                block *= 16
                continue
            # pyarrow's row numbers skip blank lines and its messages are terse; parse line by
            # line to name the bad line, or to load mixed-type columns pyarrow refuses.
            return _read_jsonl_slowly(path, brief(exc))


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with pa.input_stream(str(path), compression="detect") as raw:
        reader = io.BufferedReader(raw)
        yield from enumerate(reader, start=1)


def _read_jsonl_slowly(path: Path, arrow_message: str) -> pa.Table:
    """Parse line by line; a bad line becomes an empty record carrying its error (see BAD_RECORD_COLUMN).

    One bad record must not stop an audit: it is reported by the ``corrupt`` check. A file with no
    good line at all is not JSON lines, and raises the first line's error.
    """
    records: list[dict[str, Any]] = []
    errors: list[str | None] = []
    first_error: str | None = None
    try:
        for number, raw in _lines(path):
            error: str | None = None
            value: Any = None
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                error = f"line {number}: not valid UTF-8 text; re-save the file as UTF-8"
                text = "-"
            if not text:
                continue
            if error is None:
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    if number == 1 and path.name.lower().endswith(".json"):
                        _reject_single_object(path)
                    error = (
                        f"line {number}: malformed JSON ({exc.msg} at column {exc.colno}); "
                        "each line must hold one complete JSON object"
                    )
            if error is None and not isinstance(value, dict):
                error = (
                    f"line {number}: expected a JSON object, found {_json_kind(value)}; "
                    'each line must hold one object like {"text": "..."}'
                )
            if error is not None:
                first_error = first_error or error
                records.append({})
                errors.append(f"{path.name} {error}")
            else:
                records.append(value)
                errors.append(None)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read ({brief(exc)})") from None
    if not records:
        raise InputError(f"{path}: no JSON records found ({arrow_message})")
    if all(e is not None for e in errors):
        raise InputError(f"{path}: {first_error}")
    table = table_from_records(records)
    if first_error is not None:
        table = table.append_column(BAD_RECORD_COLUMN, pa.array(errors, pa.string()))
    return table


def _reject_single_object(path: Path) -> None:
    """Raise a clearer error when a .json file is one pretty-printed object rather than JSON lines."""
    try:
        with pa.input_stream(str(path), compression="detect") as raw:
            value = json.loads(raw.read().decode("utf-8-sig"))
    except (ValueError, pa.ArrowException, OSError):
        return
    if isinstance(value, dict):
        raise InputError(
            f"{path}: holds a single JSON object; curata expects JSON lines (one object per line) "
            "or a JSON array of objects"
        )


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _read_json_array(path: Path) -> pa.Table:
    with pa.input_stream(str(path), compression="detect") as raw:
        data = raw.read()
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8 text; re-save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: line {exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
        ) from None
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InputError(
                f"{path}: array item {i} is {_json_kind(item)}, not a JSON object; "
                "each record must be an object"
            )
    if not value:
        raise InputError(f"{path}: the JSON array is empty; nothing to audit")
    return table_from_records(value)


def table_from_records(records: list[dict[str, Any]]) -> pa.Table:
    """Build a table from dicts; a column whose values have mixed types becomes strings.

    In such a column, values of a kind that a clear majority of the column does not share (an
    object among strings, a string among numbers) are wrong types: each record holding one gets
    a message in TYPE_ERROR_COLUMN, which the ``corrupt`` check reports. One bad value never
    stops the audit.
    """
    names: dict[str, None] = {}
    for record in records:
        for key in record:
            names.setdefault(str(key), None)
    arrays: list[pa.Array] = []
    type_errors: list[list[str]] = [[] for _ in records]
    for name in names:
        values = [record.get(name) for record in records]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arrays.append(
                pa.array(
                    [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                    pa.string(),
                )
            )
            _note_wrong_kinds(name, values, type_errors)
    if any(type_errors):
        arrays.append(pa.array(["; ".join(e) if e else None for e in type_errors], pa.string()))
        names[TYPE_ERROR_COLUMN] = None
    return pa.Table.from_arrays(arrays, names=list(names))


def _note_wrong_kinds(name: str, values: list[Any], type_errors: list[list[str]]) -> None:
    """Add a message for each value whose JSON kind differs from the column's majority kind."""
    kinds = [
        "a number" if isinstance(v, int | float) and not isinstance(v, bool) else _json_kind(v)
        for v in values
    ]
    counts = Counter(k for k in kinds if k != "null")
    if not counts:
        return
    majority, count = counts.most_common(1)[0]
    if count * 2 <= sum(counts.values()):
        return  # no clear majority: the column is genuinely mixed, not a few wrong values
    for row, kind in enumerate(kinds):
        if kind not in ("null", majority):
            type_errors[row].append(
                f"field '{name}' holds {kind} where the other records hold {majority.split(' ', 1)[1]}s"
            )


# --- several files -------------------------------------------------------------------------------


def concat_unified(tables: list[pa.Table], names: list[str], folder: Path) -> pa.Table:
    """Concatenate tables whose schemas may differ: missing columns become null, types widen.

    When two files give a column incompatible flat types (int in one, string in another) the
    column is read as strings everywhere; incompatible nested types raise InputError.
    """
    if len(tables) == 1:
        return tables[0]
    if all(t.num_columns == 0 for t in tables):
        # Every column is streamed from the files (a text-only dataset): only the row count is
        # left, which Arrow's concatenation of column-less tables would lose.
        rows = sum(t.num_rows for t in tables)
        return pa.table({"_": pa.nulls(rows)}).drop_columns(["_"])
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError):
        pass
    seen: dict[str, tuple[pa.DataType, str]] = {}
    conflicting: set[str] = set()
    for table, name in zip(tables, names, strict=True):
        for fld in table.schema:
            if pa.types.is_null(fld.type):
                continue
            if fld.name in seen and seen[fld.name][0] != fld.type:
                first_type, first_file = seen[fld.name]
                if pa.types.is_nested(fld.type) or pa.types.is_nested(first_type):
                    raise InputError(
                        f"{folder}: column '{fld.name}' is {first_type} in {first_file} but "
                        f"{fld.type} in {name}; make the files agree on its type"
                    )
                conflicting.add(fld.name)
            seen.setdefault(fld.name, (fld.type, name))
    fixed: list[pa.Table] = []
    for table in tables:
        for col in conflicting & set(table.column_names):
            idx = table.column_names.index(col)
            table = table.set_column(idx, col, pc.cast(table.column(col), pa.string()))
        fixed.append(table)
    try:
        return pa.concat_tables(fixed, promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(f"{folder}: the files' columns cannot be combined ({brief(exc)})") from None


def read_table_path(
    path: Path,
    *,
    id_column: str | None = None,
    skip_column: str | None = None,
    staged: Mapping[Path, Path] | None = None,
) -> Loaded:
    """Read a single Parquet/CSV/TSV/JSON-lines file (``skip_column``, ``staged``: see
    ``read_table_file``)."""
    fmt = table_format(path)
    if fmt is None:
        suffix = "".join(path.suffixes[-2:]) or "(none)"
        raise InputError(f"{path}: unsupported file type {suffix}; {SUPPORTED_HINT}")
    table = read_table_file(path, fmt, id_column=id_column, skip_column=skip_column, staged=staged)
    return Loaded(table=table, format=fmt, kind="tabular", root=path.parent, files=[path.name])


def read_table_folder(
    folder: Path,
    files: list[str],
    skipped: int,
    *,
    id_column: str | None = None,
    skip_column: str | None = None,
    staged: Mapping[Path, Path] | None = None,
) -> Loaded:
    """Read the table files ``files`` (relative to ``folder``, sorted) and concatenate them."""
    formats: dict[str, list[str]] = {}
    for rel in files:
        fmt = table_format(Path(rel))
        if fmt is not None:
            formats.setdefault(fmt, []).append(rel)
    if len(formats) > 1:
        summary = ", ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in sorted(formats.items()))
        raise InputError(
            f"{folder}: mixes table formats ({summary}); keep one format per folder "
            "or point curata at one file"
        )
    if not formats:
        raise InputError(f"{folder}: holds no table files; {SUPPORTED_HINT}")
    fmt, files = next(iter(formats.items()))
    tables: list[pa.Table] = []
    used: list[str] = []
    empty: list[str] = []
    for rel in files:
        path = folder / rel
        if path.stat().st_size == 0:
            # An empty shard adds no records; skipping it beats refusing the whole folder.
            empty.append(rel)
            continue
        tables.append(read_table_file(path, fmt, id_column=id_column, skip_column=skip_column, staged=staged))
        used.append(rel)
    if not tables:
        raise InputError(f"{folder}: every {fmt} file is empty; nothing to audit")
    table = concat_unified(tables, used, folder)
    extra: dict[str, Any] = {"rows_per_file": [t.num_rows for t in tables]}
    if empty:
        extra["empty_files"] = empty
    return Loaded(
        table=table,
        format=fmt,
        kind="tabular",
        root=folder,
        files=used,
        skipped_files=skipped,
        extra=extra,
    )
