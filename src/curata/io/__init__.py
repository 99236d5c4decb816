"""Read DATA (a table file, a folder of tables or images, or a Hugging Face folder) as a Dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from curata.dataset import Dataset, RoleName
from curata.errors import InputError
from curata.io.hf import is_hf_dataset, is_hf_dataset_dict, read_hf_dataset, read_hf_dataset_dict
from curata.io.images import read_image_folder, walk_files
from curata.io.roles import Loaded, assemble, has_image_extension
from curata.io.tabular import (
    BAD_RECORD_COLUMN,
    SUPPORTED_HINT,
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
) -> Dataset:
    """Read ``path`` into a Dataset, detecting column roles the caller did not name.

    ``path`` may be a Parquet, CSV/TSV or JSON-lines file, a folder of such files (one format,
    read in sorted order), an image folder (``[split/]class/file.ext``) or a Hugging Face
    ``save_to_disk`` folder. Every problem with the input raises ``InputError`` with one line
    naming the file (and line, where known).
    """
    data = Path(path)
    overrides: dict[RoleName, str | None] = {
        "id": id_column,
        "text": text_column,
        "image": image_column,
        "label": label_column,
        "split": split_column,
    }
    loaded = _load(data, id_column)
    bad: list[dict[str, object]] = []
    if BAD_RECORD_COLUMN in loaded.table.column_names:
        errors = loaded.table.column(BAD_RECORD_COLUMN).to_pylist()
        bad = [{"row": row, "error": e} for row, e in enumerate(errors) if e is not None]
        loaded.table = loaded.table.drop_columns([BAD_RECORD_COLUMN])
    dataset = assemble(loaded, overrides, str(data))
    if bad:
        dataset.description["bad_records"] = bad
    return dataset


def _load(data: Path, id_column: str | None) -> Loaded:
    if not data.exists():
        raise InputError(f"{data}: no such file or folder; check the path")
    if data.is_file():
        if has_image_extension(data.name):
            raise InputError(f"{data}: is a single image; point curata at the folder that holds the images")
        return read_table_path(data, id_column=id_column)
    if not data.is_dir():
        raise InputError(f"{data}: is neither a regular file nor a folder")
    if is_hf_dataset_dict(data):
        return read_hf_dataset_dict(data)
    if is_hf_dataset(data):
        return read_hf_dataset(data)
    return _load_folder(data, id_column)


def _load_folder(folder: Path, id_column: str | None) -> Loaded:
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
    return read_table_folder(folder, tables, len(files) - len(tables), id_column=id_column)
