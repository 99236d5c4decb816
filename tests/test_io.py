"""Tests for curata.io: every input format, role detection, record ids and input errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curata.errors import InputError
from curata.io import read_dataset
from curata.io.roles import detect_roles

from conftest import write_image_folder


@pytest.fixture(autouse=True, params=["whole", "staged"])
def text_formats_read(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: text formats read whole, and staged as Parquet whatever their size (the
    path large CSV/JSON-lines files take: see ``curata.io.staging``); both must read the same."""
    from curata.io import staging

    if request.param == "staged":
        monkeypatch.setattr(staging, "STAGE_MIN_BYTES", 0)
    return str(request.param)


def _values(ds: Any, name: str) -> list[Any]:
    """Column ``name`` of a dataset, held in its table or streamed from its files."""
    if name in ds.table.column_names:
        return list(ds.table.column(name).to_pylist())
    assert ds.content is not None and ds.content.column == name
    return [v for batch in ds.content.batches(1_000) for v in batch.to_pylist()]


def png_bytes(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """Return a tiny valid PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "a1", "text": "the first sentence", "label": "pos", "split": "train"},
    {"id": "a2", "text": "the second sentence", "label": "neg", "split": "test"},
    {"id": "a3", "text": "the third sentence", "label": "pos", "split": "validation"},
]


# --- formats -------------------------------------------------------------------------------------


def test_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    ds = read_dataset(path)
    assert ds.kind == "tabular"
    assert ds.root == tmp_path
    assert ds.num_rows == 3
    assert ds.roles.as_dict() == {
        "id": "id",
        "text": "text",
        "image": None,
        "label": "label",
        "split": "split",
    }
    assert ds.record_ids.type == pa.string()
    assert ds.record_ids.to_pylist() == ["a1", "a2", "a3"]
    assert ds.splits() == ["train", "test", "val"]
    desc = ds.description
    assert desc["format"] == "parquet"
    assert desc["files"] == ["data.parquet"]
    assert desc["num_files"] == 1
    assert desc["columns"] == ["id", "text", "label", "split"]
    assert desc["skipped_files"] == 0
    assert desc["detected_roles"]["label"] == "label"


def test_csv_file_keeps_id_strings(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("ID,body,target\n007,hello there,1\n010,general kenobi,0\n", encoding="utf-8")
    ds = read_dataset(path)
    assert ds.description["format"] == "csv"
    assert ds.roles.id == "ID"
    assert ds.roles.text == "body"
    assert ds.roles.label == "target"
    # Leading zeros survive: id-like CSV columns are read as strings.
    assert ds.record_ids.to_pylist() == ["007", "010"]
    assert ds.labels() == ["1", "0"]


def test_tsv_and_gzipped_csv(tmp_path: Path) -> None:
    import gzip

    tsv = tmp_path / "data.tsv"
    tsv.write_text("text\tlabel\nhello, world\tx\n", encoding="utf-8")
    assert _values(read_dataset(tsv), "text") == ["hello, world"]
    gz = tmp_path / "data.csv.gz"
    gz.write_bytes(gzip.compress(b"text,label\nhi,y\nho,z\n"))
    ds = read_dataset(gz)
    assert ds.description["format"] == "csv"
    assert ds.labels() == ["y", "z"]


@pytest.mark.parametrize("name", ["data.jsonl", "data.ndjson", "data.json"])
def test_jsonl_file(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, ROWS)
    ds = read_dataset(path)
    assert ds.description["format"] == "jsonl"
    assert ds.record_ids.to_pylist() == ["a1", "a2", "a3"]
    assert ds.roles.text == "text"


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    ds = read_dataset(path)
    assert ds.num_rows == 3
    assert ds.roles.label == "label"


def test_jsonl_blank_lines_and_mixed_types(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"value": 1, "label": "a"}\n\n{"value": "x", "label": "b"}\n', encoding="utf-8")
    ds = read_dataset(path)
    # pyarrow refuses a column that changes type; the slow path reads it as strings.
    assert ds.table.column("value").to_pylist() == ["1", "x"]
    assert ds.labels() == ["a", "b"]


def test_folder_of_parquet_unifies_schemas(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"text": ["c"], "n": [2.5], "extra": [True]}), folder / "part-1.parquet")
    (folder / "README.md").write_text("notes", encoding="utf-8")
    ds = read_dataset(folder)
    assert ds.kind == "tabular"
    assert ds.root == folder
    assert ds.description["files"] == ["part-0.parquet", "part-1.parquet"]
    assert ds.description["skipped_files"] == 1
    # The text column stays in the files, streamed by row groups; the role accessor still reads it.
    assert "text" not in ds.table.column_names and ds.content is not None
    col = ds.column("text")
    assert col is not None and col.to_pylist() == ["a", "b", "c"]
    assert ds.table.column("n").to_pylist() == [1.0, 2.0, 2.5]
    assert ds.table.column("extra").to_pylist() == [None, None, True]
    assert ds.record_ids.to_pylist() == ["0", "1", "2"]


def test_folder_conflicting_types_become_strings(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"code": 1}])
    write_jsonl(tmp_path / "b.jsonl", [{"code": "x"}])
    ds = read_dataset(tmp_path)
    assert ds.table.column("code").to_pylist() == ["1", "x"]


def test_folder_of_csv_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("text\nsecond\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("text\nfirst\n", encoding="utf-8")
    (tmp_path / "c.csv").write_text("", encoding="utf-8")
    ds = read_dataset(tmp_path)
    assert _values(ds, "text") == ["first", "second"]
    assert ds.description["empty_files"] == ["c.csv"]


# --- image folders -------------------------------------------------------------------------------


def test_image_folder_without_splits(tmp_path: Path) -> None:
    write_image_folder(
        tmp_path,
        {
            "cat/1.png": png_bytes(),
            "cat/2.JPG": png_bytes(),
            "dog/1.png": png_bytes(),
            "loose.png": png_bytes(),
            "dog/notes.txt": b"hello",
            ".hidden/x.png": png_bytes(),
        },
    )
    ds = read_dataset(tmp_path)
    assert ds.kind == "images"
    assert ds.root == tmp_path
    assert ds.roles.as_dict() == {
        "id": None,
        "text": None,
        "image": "path",
        "label": "label",
        "split": None,
    }
    assert ds.table.column("path").to_pylist() == ["cat/1.png", "cat/2.JPG", "dog/1.png", "loose.png"]
    assert ds.record_ids.to_pylist() == ds.table.column("path").to_pylist()
    assert ds.labels() == ["cat", "cat", "dog", None]
    assert ds.table.column("split").to_pylist() == [None] * 4
    assert ds.description["skipped_files"] == 1
    assert ds.description["format"] == "images"
    assert ds.description["detected_roles"]["image"] == "path"


def test_image_folder_with_splits(tmp_path: Path) -> None:
    write_image_folder(
        tmp_path,
        {
            "Train/cat/1.png": png_bytes(),
            "train/dog/2.png": png_bytes(),
            "validation/cat/3.png": png_bytes(),
            "test/4.png": png_bytes(),
            "extra/cat/5.png": png_bytes(),
            "metadata.csv": b"file_name,label\n",
        },
    )
    ds = read_dataset(tmp_path)
    assert ds.roles.split == "split"
    rows = dict(zip(ds.record_ids.to_pylist(), zip(ds.labels(), ds.splits(), strict=True), strict=True))
    assert rows == {
        "Train/cat/1.png": ("cat", "train"),
        "extra/cat/5.png": ("extra", None),
        "test/4.png": (None, "test"),
        "train/dog/2.png": ("dog", "train"),
        "validation/cat/3.png": ("cat", "val"),
    }
    assert ds.description["skipped_files"] == 1


def test_corrupt_and_empty_images_are_listed(tmp_path: Path) -> None:
    write_image_folder(
        tmp_path,
        {"a/good.png": png_bytes(), "a/corrupt.png": b"not an image", "b/empty.jpg": b""},
    )
    ds = read_dataset(tmp_path)
    assert ds.record_ids.to_pylist() == ["a/corrupt.png", "a/good.png", "b/empty.jpg"]


# --- Hugging Face save_to_disk -------------------------------------------------------------------


def test_hf_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds_hf = datasets.Dataset.from_dict(
        {"sentence": ["good film", "bad film", "odd film"], "label": [1, 0, -1]},
        features=datasets.Features(
            {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
        ),
    )
    ds_hf.save_to_disk(str(tmp_path / "hf"))
    ds = read_dataset(tmp_path / "hf")
    assert ds.kind == "tabular"
    assert ds.description["format"] == "hf"
    assert ds.roles.text == "sentence"
    assert ds.roles.label == "label"
    # ClassLabel ints become their names; -1 (no label) becomes null.
    assert ds.labels() == ["pos", "neg", None]
    assert ds.record_ids.to_pylist() == ["0", "1", "2"]


def test_hf_dataset_dict_adds_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    part = datasets.Dataset.from_dict({"text": ["x", "y"], "uid": ["u1", None]})
    datasets.DatasetDict({"train": part, "test": part.select([0])}).save_to_disk(str(tmp_path / "dd"))
    ds = read_dataset(tmp_path / "dd")
    assert ds.roles.split == "split"
    assert ds.table.column("split").to_pylist() == ["train", "train", "test"]
    assert ds.splits() == ["train", "train", "test"]
    # The null uid falls back to its row number, and the repeat of u1 is counted.
    assert ds.record_ids.to_pylist() == ["u1", "1", "u1"]
    assert ds.description["null_ids"] == 1
    assert ds.description["duplicate_ids"] == 1
    assert ds.description["files"] == [
        "train/data-00000-of-00001.arrow",
        "test/data-00000-of-00001.arrow",
    ]


def test_hf_image_feature_becomes_bytes(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data = png_bytes()
    ds_hf = datasets.Dataset.from_dict(
        {"picture": [{"bytes": data, "path": None}], "fine_label": [3]},
        features=datasets.Features({"picture": datasets.Image(), "fine_label": datasets.Value("int64")}),
    )
    ds_hf.save_to_disk(str(tmp_path / "img"))
    ds = read_dataset(tmp_path / "img")
    assert ds.roles.image == "picture"
    assert ds.roles.label == "fine_label"
    assert ds.modality == "image"
    assert ds.table.column("picture").to_pylist() == [data]
    assert ds.description["image_source"] == "bytes"


# --- roles ---------------------------------------------------------------------------------------


def test_detect_roles_by_name_and_content() -> None:
    table = pa.table(
        {
            "UUID": ["x", "y"],
            "file": ["imgs/a.png", "imgs/b.JPEG"],
            "caption": ["a fairly long caption about a cat", "another long caption about a dog"],
            "short": ["a", "b"],
            "category": ["cat", "dog"],
            "fold": [0, 1],
        }
    )
    assert detect_roles(table) == {
        "id": "UUID",
        "text": "caption",
        "image": "file",
        "label": "category",
        "split": "fold",
    }


def test_detect_roles_needs_image_extensions_and_one_long_column() -> None:
    table = pa.table(
        {
            "path": ["a/b", "c/d"],
            "one": ["x" * 30, "y" * 30],
            "two": ["x" * 40, "y" * 40],
            "image_bytes": pa.array([b"\x89PNG", b"\x89PNG"], pa.binary()),
        }
    )
    roles = detect_roles(table)
    assert roles["image"] is None  # "path" values lack image extensions; "image_bytes" is not a name
    assert roles["text"] is None  # two long string columns: ambiguous


def test_overrides_win_and_are_checked(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": 1, "text": "hello world", "tag": "a", "other": "zz"}, {"id": 2, "text": "x", "tag": "b"}],
    )
    ds = read_dataset(path, label_column="tag", text_column="other", id_column="TAG")
    assert ds.roles.label == "tag"
    assert ds.roles.text == "other"
    assert ds.roles.id == "tag"  # unique case-insensitive match
    assert ds.record_ids.to_pylist() == ["a", "b"]
    with pytest.raises(InputError, match=r"no column named 'lbl'.*available columns: id, text, tag, other"):
        read_dataset(path, label_column="lbl")


def test_text_column_numbers_are_cast(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": 12}, {"text": 3.5}])
    ds = read_dataset(path)
    assert ds.table.column("text").type == pa.string()
    assert ds.table.column("text").to_pylist()[0] == "12"


def test_nested_label_column(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"label": {"a": 1}, "y": [1, 2]}, {"label": {"a": 2}, "y": [3]}]
    )
    with pytest.raises(InputError, match=r"d\.jsonl: label column 'y' holds nested values"):
        read_dataset(path, label_column="y")
    # A detected nested label column is left out of the role rather than failing the read.
    ds = read_dataset(path)
    assert ds.roles.label is None


def test_image_folder_overrides(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"cat/1.png": png_bytes()})
    ds = read_dataset(tmp_path, id_column="path")
    assert ds.roles.id == "path"
    with pytest.raises(InputError, match="no column named 'caption'"):
        read_dataset(tmp_path, text_column="caption")


# --- record ids ----------------------------------------------------------------------------------


def test_record_ids_row_numbers_across_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "1.jsonl", [{"text": "a"}, {"text": "b"}])
    write_jsonl(tmp_path / "2.jsonl", [{"text": "c"}])
    ds = read_dataset(tmp_path)
    assert ds.record_ids.to_pylist() == ["0", "1", "2"]
    assert ds.description["rows_per_file"] == [2, 1]


def test_a_chunked_string_id_column_is_held_once(tmp_path: Path) -> None:
    """Record ids read from a string id column in several row groups share the table's buffers
    (not a combined copy beside the chunks); ids that differ from the column leave it alone."""
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"key": [f"k{i}" for i in range(10)], "text": ["t"] * 10}), path, row_group_size=3
    )
    ds = read_dataset(path)
    column = ds.table.column("key")
    assert ds.record_ids.to_pylist() == column.to_pylist() == [f"k{i}" for i in range(10)]
    assert column.num_chunks == 1
    assert column.chunk(0).buffers()[2].address == ds.record_ids.buffers()[2].address
    empty = tmp_path / "e.parquet"
    pq.write_table(pa.table({"key": ["k0", "", "k2", "k3"], "text": ["t"] * 4}), empty, row_group_size=2)
    ds = read_dataset(empty)
    assert ds.record_ids.to_pylist() == ["k0", "1", "k2", "k3"]
    assert ds.table.column("key").to_pylist() == ["k0", "", "k2", "k3"]  # the data as it is


def test_null_and_empty_ids_use_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [10, None, 12], "record": ["a", "b", "c"]}), path)
    ds = read_dataset(path)
    assert ds.record_ids.to_pylist() == ["10", "1", "12"]
    assert ds.description["null_ids"] == 1
    csv = tmp_path / "d.csv"
    csv.write_text("key,text\nk0,a\n,b\n", encoding="utf-8")
    ds = read_dataset(csv)
    assert ds.record_ids.to_pylist() == ["k0", "1"]
    assert ds.description["null_ids"] == 1


# --- errors --------------------------------------------------------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        read_dataset(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file or folder" in _error(tmp_path / "nope.csv")


def test_empty_folder(tmp_path: Path) -> None:
    assert "folder is empty" in _error(tmp_path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    message = _error(path)
    assert "data.xlsx" in message and "unsupported file type .xlsx" in message


def test_mixed_formats(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("text\na\n", encoding="utf-8")
    write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    assert "mixes table formats" in _error(tmp_path)


def test_neither_images_nor_tables(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    message = _error(tmp_path)
    assert "holds neither images nor table files" in message and ".txt" in message


def test_malformed_csv_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6,7\n", encoding="utf-8")
    message = _error(path)
    assert "bad.csv: line 4: expected 2 fields, found 3" in message


def test_malformed_csv_line_counts_multiline_values(tmp_path: Path) -> None:
    path = tmp_path / "ml.csv"
    path.write_text('a,b\n\n1,"two\nlines"\n\n2,3,4\n', encoding="utf-8")
    assert "ml.csv: line 6: expected 2 fields, found 3" in _error(path)


def test_csv_multiline_values(tmp_path: Path) -> None:
    path = tmp_path / "ml.csv"
    path.write_text('text,label\n"first line\nsecond line",a\n', encoding="utf-8")
    assert _values(read_dataset(path), "text") == ["first line\nsecond line"]


def test_malformed_csv_in_folder_names_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("a,b\n1,2,3\n", encoding="utf-8")
    assert "b.csv: line 2" in _error(tmp_path)


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("", encoding="utf-8")
    assert "e.csv: file is empty" in _error(path)


def test_header_only_csv_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n", encoding="utf-8")
    assert "no records" in _error(path)


def _bad_records(path: Path) -> list[dict[str, object]]:
    bad: list[dict[str, object]] = read_dataset(path).description["bad_records"]
    return bad


def test_malformed_json_line_becomes_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "x"}\n\n{"a": 2\n{"a": "y"}\n', encoding="utf-8")
    ds = read_dataset(path)
    assert ds.num_rows == 3 and ds.record_ids.to_pylist() == ["0", "1", "2"]
    bad = ds.description["bad_records"]
    assert len(bad) == 1 and bad[0]["row"] == 1 and "bad.jsonl line 3: malformed JSON" in bad[0]["error"]
    assert "__curata_bad_record__" not in ds.table.column_names


def test_non_object_json_line(tmp_path: Path) -> None:
    path = tmp_path / "arr.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    assert "arr.jsonl line 2: expected a JSON object, found an array" in str(_bad_records(path)[0]["error"])


def test_invalid_utf8_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert "latin.jsonl line 2: not valid UTF-8" in str(_bad_records(path)[0]["error"])


def test_jsonl_without_one_good_line_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_text("not json\n{also not\n", encoding="utf-8")
    assert "junk.jsonl: line 1: malformed JSON" in _error(path)


@pytest.mark.parametrize("cut", ["truncated", "junk", "corrupt_middle"])
def test_corrupt_parquet(tmp_path: Path, cut: str) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(1000)]}), good, compression="snappy")
    data = bytearray(good.read_bytes())
    if cut == "truncated":
        data = data[: len(data) // 2]
    elif cut == "junk":
        data = bytearray(b"this is not parquet at all")
    else:
        for i in range(8, len(data) // 2):
            data[i] = 0xFF
    path = tmp_path / "broken.parquet"
    path.write_bytes(bytes(data))
    assert "broken.parquet" in _error(path)


def test_single_image_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes())
    assert "x.png: is a single image" in _error(path)


def test_corrupt_hf_arrow(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "hf"))
    arrow = tmp_path / "hf" / "data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[:40])
    assert "data-00000-of-00001.arrow" in _error(tmp_path / "hf")


def test_blank_and_repeated_column_names_are_renamed(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text(",text,text\n0,a,b\n", encoding="utf-8")
    ds = read_dataset(path)
    assert ds.table.column_names == ["column_0", "text", "text_2"]
    assert ds.roles.text == "text"


def test_csv_with_image_paths(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"imgs/a.png": png_bytes(), "imgs/b.png": png_bytes()})
    path = tmp_path / "meta.csv"
    path.write_text("filename,label\nimgs/a.png,x\nimgs/b.png,y\n", encoding="utf-8")
    ds = read_dataset(path)
    assert ds.kind == "tabular"
    assert ds.roles.image == "filename"
    assert ds.modality == "image"
    assert all((ds.root / p).is_file() for p in _values(ds, "filename"))


def test_parquet_content_is_streamed_by_row_groups(tmp_path: Path) -> None:
    """The text of Parquet input is never loaded whole: batches stream it, take reads a few groups."""
    import numpy as np

    folder = tmp_path / "shards"
    folder.mkdir()
    texts = [f"record number {i} with some words" for i in range(250)]
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(100)], "text": texts[:100]}),
        folder / "a.parquet",
        row_group_size=30,
    )
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(100, 250)], "text": texts[100:]}),
        folder / "b.parquet",
        row_group_size=40,
    )
    ds = read_dataset(folder)
    assert ds.roles.text == "text" and ds.content is not None and "text" not in ds.table.column_names
    assert ds.description["columns"] == ["id", "text"]
    streamed = [v for batch in ds.content_batches("text", 17) for v in batch.to_pylist()]
    assert streamed == texts
    rows = np.array([249, 0, 31, 31, 130, 99, 100, 5])
    assert ds.take("text", rows).to_pylist() == [texts[i] for i in rows]
    assert ds.take("id", rows).to_pylist() == [f"r{i}" for i in rows]


def test_streamed_parquet_audits_like_jsonl(tmp_path: Path) -> None:
    """The same records as Parquet (text streamed) and as JSON lines (read whole) give equal findings."""
    import random

    from curata.audit import audit

    from conftest import edit_words, random_text

    rng = random.Random(21)
    base = [random_text(rng, 50) for _ in range(60)]
    rows = [{"id": f"d{i}", "text": t, "split": "train"} for i, t in enumerate(base)]
    rows += [{"id": f"n{i}", "text": edit_words(t, rng, 1), "split": "test"} for i, t in enumerate(base[:15])]
    rows += [{"id": f"e{i}", "text": t.upper(), "split": "train"} for i, t in enumerate(base[20:30])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=16)
    write_jsonl(tmp_path / "d.jsonl", rows)
    a = audit(tmp_path / "d.parquet", tmp_path / "oa", workers=1, workspace=tmp_path / "wa")
    b = audit(tmp_path / "d.jsonl", tmp_path / "ob", workers=1, workspace=tmp_path / "wb")
    assert a.findings.num_rows >= 30
    assert a.findings.equals(b.findings)


def test_wrong_types_are_reported_per_record(tmp_path: Path) -> None:
    """A value of another kind than the rest of its column is a `corrupt` finding, not a stop."""
    from curata.audit import audit

    rows: list[dict[str, object]] = [
        {"id": f"r{i}", "text": f"a perfectly ordinary sentence number {i}", "label": "x"} for i in range(6)
    ]
    rows[2]["text"] = {"nested": "object"}
    rows[4]["label"] = ["a", "list"]
    rows[5]["text"] = 12345
    write_jsonl(tmp_path / "d.jsonl", rows)
    ds = read_dataset(tmp_path / "d.jsonl")
    assert "__curata_type_error__" not in ds.table.column_names
    assert [w["row"] for w in ds.description["wrong_types"]] == [2, 4, 5]
    result = audit(tmp_path / "d.jsonl", tmp_path / "out", workers=1)
    corrupt = {r["record_id"]: r["message"] for r in result.findings.to_pylist() if r["check"] == "corrupt"}
    assert corrupt == {
        "r2": "wrong type: field 'text' holds an object where the other records hold strings",
        "r4": "wrong type: field 'label' holds an array where the other records hold strings",
        "r5": "wrong type: field 'text' holds a number where the other records hold strings",
    }


def test_a_genuinely_mixed_column_is_not_a_type_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"v": 1}, {"v": "x"}, {"v": 2}, {"v": "y"}])
    assert "wrong_types" not in read_dataset(tmp_path / "d.jsonl").description


def test_labels_and_splits_map_each_distinct_value_once_and_keep_nulls(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = [None if x == 0 else int(x) for x in rng.integers(0, 5, 1_000)]
    splits = [None if x == 4 else ["train", " Test ", "validation", ""][x] for x in rng.integers(0, 5, 1_000)]
    table = pa.table({"text": ["t"] * 1_000, "label": pa.array(labels, pa.int64()), "split": splits})
    pq.write_table(table, tmp_path / "d.parquet")
    ds = read_dataset(tmp_path / "d.parquet", label_column="label", split_column="split")
    assert ds.labels() == [None if v is None else str(v) for v in labels]
    canonical = {"train": "train", " Test ": "test", "validation": "val", "": None, None: None}
    assert ds.splits() == [canonical[v] for v in splits]
    assert all(type(v) is str for v in ds.labels() if v is not None)


def test_duplicate_ids_counted_by_duckdb_past_chunk_rows_equal_arrow(tmp_path: Path) -> None:
    from curata import outofcore

    rng = np.random.default_rng(4)
    ids = [f"k{x}" for x in rng.integers(0, 60, 200)] + ["", ""]  # empty ids become row numbers
    pq.write_table(pa.table({"id": ids, "text": ["t"] * len(ids)}), tmp_path / "d.parquet")
    in_memory = read_dataset(tmp_path / "d.parquet", id_column="id")
    with outofcore.configured(chunk_rows=16, temp_directory=tmp_path / "tmp"):
        by_duckdb = read_dataset(tmp_path / "d.parquet", id_column="id")
    expected = len(ids) - len(set(in_memory.record_ids.to_pylist()))
    assert expected > 100
    assert in_memory.description["duplicate_ids"] == by_duckdb.description["duplicate_ids"] == expected
    assert not any((tmp_path / "tmp").iterdir())  # DuckDB's folder is removed
