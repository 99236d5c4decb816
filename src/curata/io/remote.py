"""Read DATA from object stores (``s3://``, ``gs://``, ...) through pyarrow's file systems.

Only Parquet is read remotely for now: one file, or every ``.parquet``/``.pq`` file under a prefix
(sorted by path, schemas unified). The table is read whole into memory, and image columns must
hold bytes (relative image paths are not fetched from the store). Credentials and endpoints come
from the usual environment (``AWS_*``, including ``AWS_ENDPOINT_URL``; Google's application
default credentials), or from the URI's query (``?endpoint_override=...&scheme=http``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from curata.dataset import Dataset, RoleName
from curata.errors import InputError

#: ``scheme://`` of a URI that names a remote file system (one letter would be a Windows drive).
_URI = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]+)://")
_PARQUET = (".parquet", ".pq")


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` is a URI of a remote file system (``file://`` is not)."""
    match = _URI.match(str(path)) if isinstance(path, str) else None
    return match is not None and match.group("scheme").lower() != "file"


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_remote(uri: str, overrides: Mapping[RoleName, str | None]) -> Dataset:
    """Read the Parquet file or folder at ``uri`` into a Dataset (roles as ``read_dataset``)."""
    import pyarrow.fs as pafs

    from curata.io.roles import Loaded, assemble

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{uri}: cannot open ({_brief(exc)}); check the URI and credentials") from None
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            files = [root]
        elif info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            files = sorted(f.path for f in found if f.is_file and f.path.lower().endswith(_PARQUET))
        else:
            raise InputError(f"{uri}: no such file or folder; check the path")
        if not files or any(not f.lower().endswith(_PARQUET) for f in files):
            raise InputError(
                f"{uri}: curata reads only Parquet (.parquet, .pq) from remote stores; "
                "copy other formats to a local folder first"
            )
        tables = [pq.read_table(f, filesystem=fs) for f in files]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{uri}: cannot read ({_brief(exc)})") from None
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except pa.ArrowException as exc:
        raise InputError(f"{uri}: the Parquet files' columns do not match ({_brief(exc)})") from None
    scheme = uri.split("://", 1)[0]
    base = PurePosixPath(root if info.type == pafs.FileType.Directory else str(PurePosixPath(root).parent))
    names = [str(PurePosixPath(f).relative_to(base)) for f in files]
    loaded = Loaded(
        table=table,
        format="parquet",
        kind="tabular",
        # Not a local folder: image paths relative to it are unreadable rather than read from here.
        root=Path(f"{scheme}:") / str(base),
        files=names,
    )
    return assemble(loaded, overrides, uri)
