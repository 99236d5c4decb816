"""Read DATA from object stores (``s3://``, ``gs://``, ...) through pyarrow's file systems.

One file, or every table file under a prefix (sorted by path; one format, as for a local folder;
hidden files and markers such as ``_SUCCESS`` are skipped). Parquet stays in the store: the text
or image column is streamed by row groups as for local Parquet (and read there by Ray workers),
the other columns are read into memory. CSV/TSV and JSON lines are copied to a temporary folder
and read exactly as local files are. Image columns must hold bytes (relative image paths are not
fetched from the store). Credentials and endpoints come from the usual environment (``AWS_*``,
including ``AWS_ENDPOINT_URL``; Google's application default credentials), or from the URI's
query (``?endpoint_override=...&scheme=http``).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curata.dataset import Dataset, RoleName
from curata.errors import InputError
from curata.io.tabular import SUPPORTED_HINT, table_format

#: ``scheme://`` of a URI that names a remote file system (one letter would be a Windows drive).
_URI = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]+)://")


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` is a URI of a remote file system (``file://`` is not)."""
    match = _URI.match(str(path)) if isinstance(path, str) else None
    return match is not None and match.group("scheme").lower() != "file"


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _listing(uri: str) -> tuple[Any, list[str], PurePosixPath]:
    """The file system, the table files at ``uri`` (sorted) and the folder they are relative to."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{uri}: cannot open ({_brief(exc)}); check the URI and credentials") from None
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            return fs, [root], PurePosixPath(root).parent
        if info.type != pafs.FileType.Directory:
            raise InputError(f"{uri}: no such file or folder; check the path")
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{uri}: cannot read ({_brief(exc)})") from None
    base = PurePosixPath(root)
    files = sorted(
        f.path
        for f in found
        if f.is_file
        and f.size != 0
        and not any(part.startswith((".", "_")) for part in PurePosixPath(f.path).relative_to(base).parts)
    )
    return fs, files, base


def read_remote(uri: str, overrides: Mapping[RoleName, str | None]) -> Dataset:
    """Read the table file or folder at ``uri`` into a Dataset (roles as ``read_dataset``)."""
    fs, files, base = _listing(uri)
    formats = {table_format(Path(f)) for f in files}
    if not files or None in formats:
        odd = next((f for f in files if table_format(Path(f)) is None), None)
        shown = f" (found {PurePosixPath(odd).name})" if odd else ""
        raise InputError(f"{uri}: holds no table files curata reads{shown}; {SUPPORTED_HINT}")
    if len(formats) > 1:
        raise InputError(f"{uri}: mixes table formats ({', '.join(sorted(map(str, formats)))}); keep one")
    root = Path(f"{uri.split('://', 1)[0]}:") / str(base)
    if formats == {"parquet"}:
        return _read_parquet(uri, fs, files, base, root, dict(overrides))
    return _read_copied(uri, fs, files, base, root, overrides)


def _read_parquet(
    uri: str,
    fs: Any,
    files: list[str],
    base: PurePosixPath,
    root: Path,
    overrides: dict[RoleName, str | None],
) -> Dataset:
    """Parquet in the store: the content column streamed from it, the rest read into memory."""
    from curata.io import streamable_content
    from curata.io.roles import Loaded, assemble

    streamed = streamable_content([Path(f) for f in files], overrides, uri, root, filesystem=fs)
    try:
        schemas = [pq.read_schema(f, filesystem=fs) for f in files]
        columns = None
        if streamed is not None:
            columns = [c for c in schemas[0].names if c != streamed[1].column]
        tables = [
            pq.read_table(
                f, filesystem=fs, columns=None if columns is None else [c for c in s.names if c in columns]
            )
            for f, s in zip(files, schemas, strict=True)
        ]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{uri}: cannot read ({_brief(exc)})") from None
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except pa.ArrowException as exc:
        raise InputError(f"{uri}: the Parquet files' columns do not match ({_brief(exc)})") from None
    loaded = Loaded(
        table=table,
        format="parquet",
        kind="tabular",
        # Not a local folder: image paths relative to it are unreadable rather than read from here.
        root=root,
        files=[str(PurePosixPath(f).relative_to(base)) for f in files],
    )
    loaded.streamed = streamed
    return assemble(loaded, overrides, uri)


def _read_copied(
    uri: str,
    fs: Any,
    files: list[str],
    base: PurePosixPath,
    root: Path,
    overrides: Mapping[RoleName, str | None],
) -> Dataset:
    """CSV/TSV or JSON lines: copied to a temporary folder, read as local files, then forgotten."""
    from curata.io import read_dataset

    with tempfile.TemporaryDirectory(prefix="curata-remote-") as tmp:
        folder = Path(tmp) / "data"
        try:
            for f in files:
                target = folder / PurePosixPath(f).relative_to(base)
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(f, compression=None) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{uri}: cannot read ({_brief(exc)})") from None
        single = len(files) == 1 and PurePosixPath(files[0]).parent == base
        local = folder / PurePosixPath(files[0]).name if single else folder
        roles = {f"{role}_column": name for role, name in overrides.items()}
        try:
            dataset = read_dataset(local, **roles)
        except InputError as exc:
            raise InputError(str(exc).replace(str(local), uri)) from None
    return dataclasses.replace(dataset, source=uri, root=root)
