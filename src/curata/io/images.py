"""List an image folder laid out as ``[split/]class/file.ext`` without opening any image."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from curata.dataset import SPLIT_ALIASES, Roles
from curata.io.roles import Loaded, has_image_extension

#: Top-level folder names (lower case) read as a split rather than a class.
SPLIT_FOLDERS: frozenset[str] = frozenset({"train", "val", "valid", "validation", "dev", "test"})
#: Folders tools leave behind that hold copies or metadata, never data (e.g. notebook checkpoints).
IGNORED_FOLDERS: frozenset[str] = frozenset({"__MACOSX", "__pycache__"})
#: How many image paths ``description["files"]`` lists; the table holds them all.
MAX_LISTED_FILES = 1000


def walk_files(root: Path) -> list[str]:
    """Return every file under ``root`` as a sorted ``/``-separated relative path.

    Hidden files and folders (name starting with ".") are left out entirely: they are editor,
    OS or notebook leftovers whose images would otherwise show up as duplicates.
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in IGNORED_FOLDERS]
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        found.extend(prefix + name for name in filenames if not name.startswith("."))
    found.sort()
    return found


def split_and_label(rel: str) -> tuple[str | None, str | None]:
    """Return (canonical split, class label) for one relative image path."""
    parts = rel.split("/")
    split: str | None = None
    if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
        split = SPLIT_ALIASES[parts[0].lower()]
        parts = parts[1:]
    # The class is the first folder below DATA (or below the split); a file directly there has none.
    label = parts[0] if len(parts) > 1 else None
    return split, label


def read_image_folder(root: Path, files: list[str]) -> Loaded:
    """Build the records of an image folder from its file list (bytes are loaded later, lazily)."""
    images = [rel for rel in files if has_image_extension(rel)]
    splits: list[str | None] = []
    labels: list[str | None] = []
    for rel in images:
        split, label = split_and_label(rel)
        splits.append(split)
        labels.append(label)
    table = pa.table(
        {
            "path": pa.array(images, pa.string()),
            "label": pa.array(labels, pa.string()),
            "split": pa.array(splits, pa.string()),
        }
    )
    has_split = any(s is not None for s in splits)
    return Loaded(
        table=table,
        format="images",
        kind="images",
        root=root,
        files=images[:MAX_LISTED_FILES],
        skipped_files=len(files) - len(images),
        fixed_roles=Roles(image="path", label="label", split="split" if has_split else None),
        detect=False,
        fallback_id_column="path",
        extra={"num_files": len(images), "files_truncated": len(images) > MAX_LISTED_FILES},
    )
