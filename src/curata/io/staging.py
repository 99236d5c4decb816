"""Stage large CSV/TSV and JSON-lines files as Parquet, so that their content column streams.

A Parquet source leaves its text or image column in the files and the audit reads it by row
groups (``ParquetContent``): memory is bounded by the batch size, not by the data. Text formats
have no row groups, so reading them whole would hold every text in memory. Files of at least
``STAGE_MIN_BYTES`` in all are first copied, streaming, into Parquet files in a temporary folder
(one per source file, the same columns and types as curata reads them); the content column is then
streamed from those copies and the other columns are read from them as from the source. The copies
live as long as the dataset that reads them.

Anything the streaming readers refuse (a malformed row, a type that changes past the first block,
a JSON array file) leaves the files to the whole-file readers, which report such problems
precisely; staging is only ever a faster path to the same table.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curata.io.images import walk_files
from curata.io.roles import has_image_extension
from curata.io.tabular import csv_options, is_json_array, table_format

__all__ = ["STAGE_MIN_BYTES", "Staged", "stage_tables"]

#: Text-format data of at least this many bytes (all files together) is staged as Parquet.
STAGE_MIN_BYTES = 64 << 20
#: Rows per row group of a staged file (the unit a check reads to fetch a few records).
STAGE_ROW_GROUP_ROWS = 65_536
#: Bytes the streaming readers parse at a time.
_BLOCK_BYTES = 16 << 20


@dataclass
class Staged:
    """Parquet copies of text-format files: ``files`` maps each source file to its copy."""

    folder: tempfile.TemporaryDirectory[str]
    files: dict[Path, Path]

    def cleanup(self) -> None:
        """Remove the copies now (they also go when this object does)."""
        self.folder.cleanup()


def stage_tables(data: Path, id_column: str | None = None) -> Staged | None:
    """Parquet copies of the CSV/TSV or JSON-lines files DATA is made of, or None when DATA is
    anything else, smaller than ``STAGE_MIN_BYTES``, or not readable by the streaming readers."""
    try:
        files = _text_table_files(data)
        if not files or sum(f.stat().st_size for f in files) < STAGE_MIN_BYTES:
            return None
    except OSError:
        return None
    folder = tempfile.TemporaryDirectory(prefix="curata-staged-")
    staged: dict[Path, Path] = {}
    try:
        for i, path in enumerate(files):
            target = Path(folder.name) / f"part-{i:05d}.parquet"
            if not _stage_one(path, str(table_format(path)), target, id_column):
                folder.cleanup()
                return None
            staged[path] = target
    except (pa.ArrowException, OSError, ValueError):
        folder.cleanup()
        return None
    return Staged(folder, staged)


def _text_table_files(data: Path) -> list[Path]:
    """The non-empty CSV/TSV/JSON-lines files of DATA (one format), or [] for anything else."""
    text_formats = ("csv", "tsv", "jsonl")
    if data.is_file():
        return [data] if table_format(data) in text_formats and data.stat().st_size > 0 else []
    if not data.is_dir():
        return []
    names = walk_files(data)
    tables = [f for f in names if table_format(Path(f)) is not None]
    images = [f for f in names if has_image_extension(f)]
    formats = {table_format(Path(f)) for f in tables}
    if not tables or len(images) > len(tables) or len(formats) != 1 or formats.pop() not in text_formats:
        return []
    return [data / f for f in tables if (data / f).stat().st_size > 0]


def _stage_one(path: Path, fmt: str, target: Path, id_column: str | None) -> bool:
    """Copy one file into ``target`` batch by batch; False when the streaming reader cannot read it."""
    reader: pa.RecordBatchReader
    if fmt in ("csv", "tsv"):
        parse, convert = csv_options(path, "\t" if fmt == "tsv" else ",", id_column)
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=parse,
            convert_options=convert,
        )
    else:
        if is_json_array(path):
            return False
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=_BLOCK_BYTES))
    with pq.ParquetWriter(target, reader.schema) as writer:
        for batch in reader:
            if fmt == "jsonl":
                batch.validate(full=True)  # pyarrow's JSON reader does not check UTF-8
            writer.write_batch(batch, row_group_size=STAGE_ROW_GROUP_ROWS)
    return True
