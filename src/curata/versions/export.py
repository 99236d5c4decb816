"""Materialise a version as files: Parquet, JSON lines, an image folder, or a Hugging Face folder.

The version's records are read from its source (which must still hold them unchanged: each
record's content hash is checked against the manifest), relabelled and redacted as the version
says, and written into a staging folder beside the target that is renamed into place when complete.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curata.dataset import Dataset
from curata.errors import ConfigError, InputError, MissingDependencyError, WorkspaceError
from curata.io.images import SPLIT_FOLDERS
from curata.versions.files import digest_of_digests, remove_tree, sha256_file, tree_digests
from curata.versions.manifest import changed_values, content_column, digest, iter_contents
from curata.versions.store import VERSION_FILE, Version, Workspace

ExportFormat = Literal["parquet", "jsonl", "imagefolder", "hf"]
FORMATS: tuple[str, ...] = ("parquet", "jsonl", "imagefolder", "hf")
#: Column holding the record ids in exported tables when the source had no id column.
ID_COLUMN = "record_id"


@dataclass(frozen=True)
class ExportResult:
    """Where a version was written, how many records, and the digest of the files written."""

    version: str
    path: Path
    format: str
    records: int
    files: int
    digest: str


def source_dataset(version: Version) -> Dataset:
    """Read a version's source the way ``curate`` read it (same role options)."""
    from curata.io import read_dataset

    source = version.meta.get("source")
    read = (version.meta.get("input") or {}).get("read") or {}
    if not source or not Path(source).exists():
        raise WorkspaceError(
            f"{version.id}: its source {source} is gone; a version stores only what changed, the rest "
            "is read from the source"
        )
    return read_dataset(source, **{k: v for k, v in read.items() if v is not None})


def _prepare_target(to: Path) -> None:
    if to.exists() and not to.is_dir():
        raise InputError(f"--to {to} is a file: give a new or empty folder")
    if to.is_dir() and any(to.iterdir()):
        raise InputError(
            f"--to {to} is not empty: choose a new or empty folder (curata never overwrites files)"
        )


def export_version(
    workspace: str | Path | Workspace,
    version: str,
    to: str | Path,
    fmt: str = "parquet",
    *,
    command: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write version ``version`` of ``workspace`` into the new or empty folder ``to`` as ``fmt``.

    Tables keep the source's columns (labels and redacted fields as the version holds them) plus a
    ``record_id`` column when the source had no id column, so auditing the export gives the same
    record ids. Images: ``imagefolder`` writes ``[split/]label/file``; ``parquet`` and ``hf`` hold
    the encoded bytes. The export is recorded in the audit log.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}': choose from {', '.join(FORMATS)}")
    v = ws.version(version)
    to = Path(to)
    _prepare_target(to)
    if fmt == "hf":
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise MissingDependencyError("datasets", "hf") from None
    dataset = source_dataset(v)
    if fmt == "imagefolder" and dataset.modality != "image":
        raise ConfigError(f"{version} holds {dataset.modality} records: an image folder needs images")
    if fmt == "jsonl" and dataset.modality == "image":
        raise ConfigError(
            f"{version} holds images, which JSON lines cannot carry: use parquet, imagefolder or hf"
        )
    manifest = v.manifest()
    table, images = materialise(v, dataset, manifest, on_progress)

    to.parent.mkdir(parents=True, exist_ok=True)
    staged = to.parent / f".{to.name}.curata-export-{uuid.uuid4().hex}"
    staged.mkdir()
    try:
        if fmt == "parquet":
            pq.write_table(table, staged / "data.parquet")
        elif fmt == "jsonl":
            _write_jsonl(table, staged / "data.jsonl")
        elif fmt == "hf":
            _write_hf(table, dataset, staged, image_column="image" if images is not None else None)
        else:
            assert images is not None
            _write_image_folder(manifest, images, dataset, staged)
        digests = tree_digests(staged)
        with ws.lock(command or f"export {version} --to {to} --format {fmt}"):
            if to.is_dir():
                if any(to.iterdir()):
                    raise InputError(f"--to {to} is not empty any more: nothing was written")
                to.rmdir()
            os.rename(staged, to)
            total = digest_of_digests(digests)
            try:
                ws.log.append(
                    command or f"export {version} --to {to} --format {fmt}",
                    inputs={f"versions/{version}/{VERSION_FILE}": sha256_file(v.path / VERSION_FILE)},
                    outputs={f"export:{to.resolve()}": total},
                )
            except BaseException:
                remove_tree(to)
                raise
    finally:
        remove_tree(staged)
    return ExportResult(version, to, fmt, manifest.num_rows, len(digests), total)


def materialise(
    v: Version, dataset: Dataset, manifest: pa.Table, on_progress: Callable[[int], None] | None
) -> tuple[pa.Table, list[bytes | None] | None]:
    """The version's records as a table (and image bytes, for image data), checked against the manifest."""
    ids = [str(x) for x in dataset.record_ids.to_pylist()]
    row_of = {rid: i for i, rid in enumerate(ids)}
    wanted = [str(x) for x in manifest.column("record_id").to_pylist()]
    missing = [rid for rid in wanted if rid not in row_of]
    if missing:
        raise WorkspaceError(
            f"{v.id}: its source {dataset.source} no longer holds record(s) {missing[:3]} "
            f"({len(missing)} in all); run `curata verify --sources`"
        )
    rows = np.array([row_of[rid] for rid in wanted], dtype=np.int64)
    changes = changed_values(v.changes())
    labels = manifest.column("label").to_pylist()
    expected = manifest.column("content_hash").to_pylist()
    content_col = content_column(dataset)

    # Content in source row order (streamed once), kept only for the version's rows.
    position = {int(r): i for i, r in enumerate(rows)}
    contents: list[Any] = [None] * len(rows)
    for row, value in enumerate(iter_contents(dataset)):
        i = position.get(row)
        if i is not None:
            contents[i] = value
            if on_progress is not None:
                on_progress(1)
    bad: list[str] = []
    for i, rid in enumerate(wanted):
        value = contents[i]
        new = changes.get(rid, {})
        if isinstance(value, dict):
            value = {**value, **new}
        elif content_col is not None and content_col in new:
            value = new[content_col]
        if digest(value) != expected[i]:
            bad.append(rid)
    if bad:
        raise WorkspaceError(
            f"{v.id}: the content of {len(bad)} record(s) in {dataset.source} no longer matches the manifest "
            f"(e.g. {bad[:3]}): the source changed since {v.id} was made"
        )

    table = dataset.table
    if dataset.content is not None and dataset.content.column not in table.column_names:
        order = list(dataset.description.get("columns") or [])
        at = order.index(dataset.content.column) if dataset.content.column in order else table.num_columns
        at = min(at, table.num_columns)
        table = table.take(pa.array(rows)).add_column(at, dataset.content.column, pa.array(contents))
    else:
        table = table.take(pa.array(rows))
    if dataset.roles.label is not None:
        table = _set_column(table, dataset.roles.label, labels)
    for column in sorted({c for vals in changes.values() for c in vals}):
        if column in table.column_names:
            current = table.column(column).to_pylist()
            updated = [
                changes.get(rid, {}).get(column, cur) for rid, cur in zip(wanted, current, strict=True)
            ]
            table = _set_column(table, column, updated)
    images: list[bytes | None] | None = None
    if dataset.modality == "image":
        images = [c if isinstance(c, bytes) else None for c in contents]
        drop = [c for c in (dataset.roles.image,) if c is not None and c in table.column_names]
        if dataset.kind == "images":
            drop += [c for c in ("path",) if c in table.column_names and c not in drop]
        table = table.drop_columns(drop)
        table = table.add_column(0, "image", pa.array(images, pa.binary()))
    if dataset.roles.id is None and ID_COLUMN not in table.column_names:
        table = table.add_column(0, ID_COLUMN, pa.array(wanted, pa.string()))
    return table, images


def _set_column(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    """Replace a column, keeping its type where every new value converts to it."""
    idx = table.column_names.index(name)
    typ = table.schema.field(name).type
    new = pa.array([None if v is None else str(v) for v in values], pa.string())
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
            new = pc.cast(new, typ)
    return table.set_column(idx, name, new)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _write_jsonl(table: pa.Table, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for batch in table.to_batches(4096):
            for row in batch.to_pylist():
                fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def _write_hf(table: pa.Table, dataset: Dataset, out: Path, image_column: str | None) -> None:
    import datasets
    from datasets.table import InMemoryTable

    def make(t: pa.Table) -> Any:
        ds = datasets.Dataset(InMemoryTable(t))
        if image_column is not None:
            ds = ds.cast_column(image_column, datasets.Image())
        return ds

    # save_to_disk draws progress bars on stderr; curata shows its own progress.
    bars_were_off = datasets.utils.logging.is_progress_bar_enabled() is False
    datasets.utils.logging.disable_progress_bar()
    try:
        split_col = dataset.roles.split
        splits = dataset.splits()
        if split_col is None or split_col not in table.column_names or not any(splits):
            make(table).save_to_disk(str(out))
            return
        values = [s or "unsplit" for s in _canonical(table.column(split_col).to_pylist())]
        parts: dict[str, Any] = {}
        for name in dict.fromkeys(values):
            mask = pa.array([v == name for v in values])
            parts[_hf_split_name(name)] = make(table.filter(mask).drop_columns([split_col]))
        datasets.DatasetDict(parts).save_to_disk(str(out))
    finally:
        if not bars_were_off:
            datasets.utils.logging.enable_progress_bar()


def _canonical(values: list[Any]) -> list[str | None]:
    from curata.dataset import SPLIT_ALIASES

    out: list[str | None] = []
    for v in values:
        s = None if v is None else str(v).strip()
        out.append(SPLIT_ALIASES.get(s.lower(), s) if s else None)
    return out


def _hf_split_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in name).strip(".")
    return cleaned or "unsplit"


def _image_extension(data: bytes | None, fallback: str) -> str:
    if fallback:
        return fallback
    if data:
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                fmt = (img.format or "").lower()
            return {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}" if fmt else ".bin")
        except Exception:
            return ".bin"
    return ".bin"


def _safe(part: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in part).strip(" .")
    return cleaned or "_"


def _write_image_folder(manifest: pa.Table, images: list[bytes | None], dataset: Dataset, out: Path) -> None:
    """Write ``[split/]label/name``; image-folder sources keep their relative paths unless relabelled."""
    origins = manifest.column("origin").to_pylist()
    labels = manifest.column("label").to_pylist()
    splits = manifest.column("split").to_pylist()
    ids = manifest.column("record_id").to_pylist()
    used: set[str] = set()
    for rid, origin, label, split, data in zip(ids, origins, labels, splits, images, strict=True):
        if dataset.kind == "images":
            rel = _relabelled_path(str(origin), label)
        else:
            name = Path(str(origin)).name if "#" not in str(origin) else _safe(str(rid))
            suffix = Path(name).suffix.lower()
            name = Path(name).stem + _image_extension(data, suffix if suffix else "")
            rel = "/".join(_safe(p) for p in (split, label) if p) + ("/" if split or label else "") + name
        rel = _unique(rel, used)
        used.add(rel)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data or b"")


def _relabelled_path(origin: str, label: str | None) -> str:
    """The image's relative path with its class folder set to ``label``."""
    parts = origin.split("/")
    head: list[str] = []
    if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
        head, parts = parts[:1], parts[1:]
    current = parts[0] if len(parts) > 1 else None
    if current == label:
        return origin
    rest = parts[1:] if len(parts) > 1 else parts
    new = [_safe(label)] if label else []
    return "/".join(head + new + rest)


def _unique(rel: str, used: set[str]) -> str:
    if rel not in used:
        return rel
    p = Path(rel)
    n = 2
    while True:
        candidate = (p.parent / f"{p.stem}-{n}{p.suffix}").as_posix()
        if candidate not in used:
            return candidate
        n += 1
