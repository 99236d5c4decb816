"""Read DATA (a table file, a folder of tables or images, or a Hugging Face folder) as a Dataset."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curata.dataset import Dataset, ParquetContent, RoleName
from curata.errors import InputError
from curata.io.hf import is_hf_dataset, is_hf_dataset_dict, read_hf_dataset, read_hf_dataset_dict
from curata.io.images import read_image_folder, walk_files
from curata.io.remote import is_remote, read_remote
from curata.io.roles import Loaded, assemble, has_image_extension
from curata.io.staging import stage_tables
from curata.io.tabular import (
    BAD_RECORD_COLUMN,
    SUPPORTED_HINT,
    TYPE_ERROR_COLUMN,
    read_table_folder,
    read_table_path,
    table_format,
)

__all__ = ["read_dataset"]


def read_dataset(
    path: str | Path,
    *,
    id_column: str | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    license_column: str | None = None,
    source_column: str | None = None,
) -> Dataset:
    """Read ``path`` into a Dataset, detecting column roles the caller did not name.

    ``path`` may be a Parquet, CSV/TSV or JSON-lines file, a folder of such files (one format,
    read in sorted order), an image folder (``[split/]class/file.ext``) or a Hugging Face
    ``save_to_disk`` folder, or a Parquet file or folder in an object store (``s3://``,
    ``gs://``: see ``curata.io.remote``). Every problem with the input raises ``InputError`` with one line
    naming the file (and line, where known). ``license_column`` and ``source_column`` name the
    per-record licence and provenance columns (found by name when not given).
    """
    data = Path(path)
    overrides: dict[RoleName, str | None] = {
        "id": id_column,
        "text": text_column,
        "image": image_column,
        "label": label_column,
        "split": split_column,
        "license": license_column,
        "source": source_column,
    }
    if is_remote(path):
        return read_remote(str(path), overrides)
    streamed = _streamable_content(data, overrides)
    staged = None
    if streamed is None:
        # Large CSV/TSV or JSON lines: stream the content from Parquet copies (see io.staging).
        staged = stage_tables(data, id_column)
        if staged is not None:
            streamed = streamable_content(list(staged.files.values()), overrides, str(data), data)
            if streamed is None:
                staged.cleanup()
                staged = None
            else:
                streamed = (streamed[0], dataclasses.replace(streamed[1], staged=staged))
    loaded = _load(
        data,
        id_column,
        None if streamed is None else streamed[1].column,
        staged=None if staged is None else staged.files,
    )
    loaded.streamed = streamed
    bad: list[dict[str, object]] = []
    if BAD_RECORD_COLUMN in loaded.table.column_names:
        errors = loaded.table.column(BAD_RECORD_COLUMN).to_pylist()
        bad = [{"row": row, "error": e} for row, e in enumerate(errors) if e is not None]
        loaded.table = loaded.table.drop_columns([BAD_RECORD_COLUMN])
    wrong: list[dict[str, object]] = []
    if TYPE_ERROR_COLUMN in loaded.table.column_names:
        messages = loaded.table.column(TYPE_ERROR_COLUMN).to_pylist()
        wrong = [{"row": row, "error": e} for row, e in enumerate(messages) if e is not None]
        loaded.table = loaded.table.drop_columns([TYPE_ERROR_COLUMN])
    dataset = assemble(loaded, overrides, str(data))
    if bad:
        dataset.description["bad_records"] = bad
    if wrong:
        dataset.description["wrong_types"] = wrong
    return dataset


def _parquet_files(data: Path) -> list[Path]:
    """The Parquet files DATA is made of (sorted, non-empty), or [] when it is anything else."""
    if data.is_file():
        return [data] if table_format(data) == "parquet" else []
    if not data.is_dir() or is_hf_dataset_dict(data) or is_hf_dataset(data):
        return []
    files = walk_files(data)
    tables = [f for f in files if table_format(Path(f)) is not None]
    images = [f for f in files if has_image_extension(f)]
    if not tables or len(images) > len(tables) or any(table_format(Path(f)) != "parquet" for f in tables):
        return []
    return [data / f for f in tables if (data / f).stat().st_size > 0]


def _streamable_content(
    data: Path, overrides: dict[RoleName, str | None]
) -> tuple[RoleName, ParquetContent] | None:
    """For local Parquet input, the text or image column to leave in the files (see
    :func:`streamable_content`)."""
    try:
        files = _parquet_files(data)
    except OSError:
        return None
    return streamable_content(files, overrides, str(data), data) if files else None


def streamable_content(
    files: list[Path],
    overrides: dict[RoleName, str | None],
    source: str,
    root: Path,
    filesystem: pafs.FileSystem | None = None,
) -> tuple[RoleName, ParquetContent] | None:
    """The text or image column of Parquet ``files`` to leave in them and stream by row groups.

    Roles are settled on the first row group (detection only samples the head of each column
    anyway); the column is streamed only when every file stores it as plain strings or bytes, so
    it needs no conversion. Anything unusual returns None and the whole table is read as before.
    """
    try:
        first = pq.ParquetFile(str(files[0]), filesystem=filesystem)
        if first.metadata.num_row_groups == 0:
            return None
        sample = first.read_row_group(0)
        probe = assemble(
            Loaded(table=sample, format="parquet", kind="tabular", root=root, files=[files[0].name]),
            overrides,
            source,
        )
    except (InputError, OSError, pa.ArrowException, ValueError):
        return None
    role: RoleName = "text" if probe.roles.text is not None else "image"
    column = probe.roles.text or probe.roles.image
    if column is None or column not in sample.column_names or probe.description.get("renamed_columns"):
        return None
    allowed = [pa.string(), pa.large_string()]
    if role == "image":
        allowed += [pa.binary(), pa.large_binary()]
    try:
        for path in files:
            schema = pq.read_schema(str(path), filesystem=filesystem)
            if schema.names.count(column) != 1 or schema.field(column).type not in allowed:
                return None
    except (OSError, pa.ArrowException):
        return None
    return role, ParquetContent(tuple(files), column, filesystem=filesystem)


def _load(
    data: Path,
    id_column: str | None,
    skip_column: str | None = None,
    staged: Mapping[Path, Path] | None = None,
) -> Loaded:
    if not data.exists():
        raise InputError(f"{data}: no such file or folder; check the path")
    if data.is_file():
        if has_image_extension(data.name):
            raise InputError(f"{data}: is a single image; point curata at the folder that holds the images")
        return read_table_path(data, id_column=id_column, skip_column=skip_column, staged=staged)
    if not data.is_dir():
        raise InputError(f"{data}: is neither a regular file nor a folder")
    if is_hf_dataset_dict(data):
        return read_hf_dataset_dict(data)
    if is_hf_dataset(data):
        return read_hf_dataset(data)
    return _load_folder(data, id_column, skip_column, staged)


def _load_folder(
    folder: Path,
    id_column: str | None,
    skip_column: str | None = None,
    staged: Mapping[Path, Path] | None = None,
) -> Loaded:
    """Read a plain folder as images or as tables, whichever kind of file it mostly holds."""
    files = walk_files(folder)
    if not files:
        raise InputError(f"{folder}: folder is empty; point curata at a folder with data files")
    images = [f for f in files if has_image_extension(f)]
    tables = [f for f in files if table_format(Path(f)) is not None]
    if not images and not tables:
        kinds = Counter(Path(f).suffix.lower() or "(no extension)" for f in files)
        found = ", ".join(f"{n} {ext}" for ext, n in kinds.most_common(5))
        raise InputError(f"{folder}: holds neither images nor table files (found {found}); {SUPPORTED_HINT}")
    # An image folder may carry a metadata CSV and a table folder a few sample images: the kind
    # with more files wins, and the other files are skipped (counted in skipped_files).
    if len(images) > len(tables):
        return read_image_folder(folder, files)
    return read_table_folder(
        folder, tables, len(files) - len(tables), id_column=id_column, skip_column=skip_column, staged=staged
    )
