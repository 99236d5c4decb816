"""Read Hugging Face ``save_to_disk`` folders straight from their Arrow files (no ``datasets``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curata.dataset import Roles
from curata.errors import InputError
from curata.io.roles import Loaded
from curata.io.tabular import brief, concat_unified

#: Column added to a DatasetDict's rows to say which split folder each came from.
SPLIT_COLUMN = "split"


def is_hf_dataset(path: Path) -> bool:
    """Return whether ``path`` is a folder written by ``Dataset.save_to_disk``."""
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def is_hf_dataset_dict(path: Path) -> bool:
    """Return whether ``path`` is a folder written by ``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file()


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this Hugging Face metadata file ({brief(exc)})") from None


def _read_arrow(path: Path) -> pa.Table:
    """Read one Arrow file: ``save_to_disk`` writes the IPC stream format, older tools the file format."""
    if not path.is_file():
        raise InputError(f"{path}: listed in state.json but missing; re-save the dataset")
    try:
        # Tables read from the memory map keep it alive; closing it here would not free the data.
        source = pa.memory_map(str(path))
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot read this Arrow file ({brief(exc)}); it may be corrupt or truncated"
        ) from None


def _class_label_names(info: Any) -> dict[str, list[str]]:
    """Return {column: class names} for top-level ClassLabel features in dataset_info.json."""
    features = info.get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        return {}
    out: dict[str, list[str]] = {}
    for name, feature in features.items():
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
            names = feature.get("names")
            if isinstance(names, list):
                out[str(name)] = [str(n) for n in names]
    return out


def _apply_class_names(table: pa.Table, class_names: dict[str, list[str]]) -> pa.Table:
    """Replace ClassLabel integers with their names; -1 (HF's "no label") becomes null."""
    for col, names in class_names.items():
        if col not in table.column_names or not pa.types.is_integer(table.column(col).type):
            continue
        values = table.column(col)
        in_range = pc.and_(pc.greater_equal(values, 0), pc.less(values, len(names)))
        indices = pc.if_else(in_range, values, pa.scalar(None, values.type))
        named = pc.take(pa.array(names, pa.string()), indices)
        table = table.set_column(table.column_names.index(col), col, named)
    return table


def _read_one(folder: Path, prefix: str) -> tuple[pa.Table, list[str], dict[str, list[str]]]:
    """Read a single saved Dataset; return its table, data files (prefixed) and class names."""
    state = _load_json(folder / "state.json")
    info = _load_json(folder / "dataset_info.json")
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{folder / 'state.json'}: lists no _data_files; re-save the dataset")
    files: list[str] = []
    tables: list[pa.Table] = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise InputError(f"{folder / 'state.json'}: a _data_files entry has no filename")
        tables.append(_read_arrow(folder / name))
        files.append(prefix + name)
    table = concat_unified(tables, files, folder)
    class_names = _class_label_names(info)
    # Drop HF's schema metadata: it describes features we have just rewritten.
    return _apply_class_names(table, class_names).replace_schema_metadata(None), files, class_names


def read_hf_dataset(folder: Path) -> Loaded:
    """Read a folder written by ``Dataset.save_to_disk``."""
    table, files, class_names = _read_one(folder, "")
    extra: dict[str, Any] = {"class_labels": class_names} if class_names else {}
    return Loaded(table=table, format="hf", kind="tabular", root=folder, files=files, extra=extra)


def read_hf_dataset_dict(folder: Path) -> Loaded:
    """Read a folder written by ``DatasetDict.save_to_disk``; a ``split`` column names each part."""
    meta = _load_json(folder / "dataset_dict.json")
    splits = meta.get("splits") if isinstance(meta, dict) else None
    if not isinstance(splits, list) or not splits:
        splits = sorted(p.name for p in folder.iterdir() if p.is_dir() and is_hf_dataset(p))
    if not splits:
        raise InputError(f"{folder}: dataset_dict.json names no splits and no split folders exist")
    tables: list[pa.Table] = []
    files: list[str] = []
    class_names: dict[str, list[str]] = {}
    for split in splits:
        sub = folder / str(split)
        if not is_hf_dataset(sub):
            raise InputError(
                f"{sub}: split '{split}' from dataset_dict.json is missing or lacks state.json; "
                "re-save the DatasetDict"
            )
        table, sub_files, names = _read_one(sub, f"{split}/")
        tables.append(table)
        files.extend(sub_files)
        class_names.update(names)
    # A data column already called "split" keeps its name; the folder name goes next to it.
    split_col = SPLIT_COLUMN
    if any(split_col in t.column_names for t in tables):
        split_col = "hf_split"
    tables = [
        t.append_column(split_col, pa.repeat(pa.scalar(str(s), pa.string()), t.num_rows))
        for t, s in zip(tables, splits, strict=True)
    ]
    table = concat_unified(tables, [str(s) for s in splits], folder)
    extra: dict[str, Any] = {
        "splits": [str(s) for s in splits],
        "rows_per_split": [t.num_rows for t in tables],
    }
    if class_names:
        extra["class_labels"] = class_names
    return Loaded(
        table=table,
        format="hf",
        kind="tabular",
        root=folder,
        files=files,
        fixed_roles=Roles(split=split_col),
        extra=extra,
    )
