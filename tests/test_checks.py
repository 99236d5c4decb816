"""Every check of the foundation: planted problems are found, clean data gives no findings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curata.audit import AuditResult, audit

from conftest import edit_words, encode, pattern_image, random_text, write_image_folder, write_parquet


def found(result: AuditResult, check: str) -> dict[str, str | None]:
    """record_id -> related_id of one check's findings."""
    rows = result.findings.filter(pa.compute.equal(result.findings.column("check"), check)).to_pylist()
    return {r["record_id"]: r["related_id"] for r in rows}


def text_rows(n: int = 40, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"doc-{i}",
            "text": random_text(rng, 60),
            "label": "a" if i % 2 else "b",
            "split": "test" if i >= n - 10 else "train",
        }
        for i in range(n)
    ]


@pytest.fixture
def planted_text(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(5)
    rows = text_rows()
    t = {r["id"]: str(r["text"]) for r in rows}
    rows += [
        {
            "id": "exact",
            "text": "  " + t["doc-1"].upper().replace(" ", "   ") + "\n",
            "label": "a",
            "split": "train",
        },
        {"id": "near", "text": edit_words(t["doc-2"], rng, 1), "label": "b", "split": "train"},
        {"id": "conflict", "text": t["doc-3"], "label": "b", "split": "train"},
        {"id": "leak", "text": t["doc-4"], "label": "b", "split": "test"},
        {"id": "empty1", "text": "", "label": "a", "split": "train"},
        {"id": "empty2", "text": " \t ", "label": "a", "split": "train"},
        {"id": "nolabel", "text": random_text(rng, 40), "label": None, "split": "train"},
        {"id": "doc-9", "text": random_text(rng, 40), "label": "a", "split": "train"},
    ]
    data = write_parquet(tmp_path / "data.parquet", rows)
    ref_rows = [
        {"id": "r-exact", "text": t["doc-5"]},
        {"id": "r-near", "text": edit_words(t["doc-6"], rng, 1)},
        {"id": "r-quote", "text": "intro words here " + " ".join(t["doc-7"].split()[10:30]) + " outro"},
        {"id": "r-other", "text": random_text(random.Random(99), 50)},
    ]
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in ref_rows))
    return data, ref


def test_planted_text_problems_are_found(planted_text: tuple[Path, Path], tmp_path: Path) -> None:
    data, ref = planted_text
    result = audit(data, tmp_path / "out", references=[ref], workers=1)
    assert found(result, "exact_duplicate") == {"exact": "doc-1", "conflict": "doc-3", "leak": "doc-4"}
    assert found(result, "near_duplicate") == {"near": "doc-2"}
    assert found(result, "conflicting_labels") == {"conflict": "doc-3"}
    assert found(result, "split_leakage") == {"leak": "doc-4"}
    assert set(found(result, "empty")) == {"empty1", "empty2"}
    assert set(found(result, "missing_label")) == {"nolabel"}
    assert set(found(result, "duplicate_id")) == {"doc-9"}
    assert found(result, "contamination") == {"doc-5": "r-exact", "doc-6": "r-near", "doc-7": "r-quote"}
    modes = {
        r["record_id"]: json.loads(r["evidence"])["mode"]
        for r in result.findings.to_pylist()
        if r["check"] == "contamination"
    }
    assert modes == {"doc-5": "exact", "doc-6": "near", "doc-7": "ngram"}
    assert all(status["status"] != "failed" for status in result.report["checks"].values())


def test_clean_text_gives_no_findings(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "clean.parquet", text_rows())
    ref = write_parquet(
        tmp_path / "ref.parquet", [{"text": random_text(random.Random(42), 50)} for _ in range(5)]
    )
    result = audit(data, tmp_path / "out", references=[ref], workers=1)
    assert result.findings.num_rows == 0
    ran = {n for n, s in result.report["checks"].items() if s["status"] == "ok"}
    assert {"exact_duplicate", "near_duplicate", "split_leakage", "contamination", "duplicate_id"} <= ran


def test_near_duplicate_threshold_is_configurable(planted_text: tuple[Path, Path], tmp_path: Path) -> None:
    from dataclasses import replace

    from curata.audit import AuditSettings
    from curata.signals.pipeline import SignalSettings
    from curata.signals.text import MinHashSettings

    strict = AuditSettings(
        signals=replace(SignalSettings(), minhash=replace(MinHashSettings(), min_jaccard=0.99))
    )
    result = audit(planted_text[0], tmp_path / "out", workers=1, settings=strict)
    assert found(result, "near_duplicate") == {}


def _image_layout() -> dict[str, bytes]:
    layout = {}
    for i in range(16):
        split = "test" if i >= 12 else "train"
        layout[f"{split}/{'cat' if i % 2 else 'dog'}/{i:03d}.png"] = encode(pattern_image(i))
    return layout


def test_planted_image_problems_are_found(tmp_path: Path) -> None:
    layout = _image_layout()
    png = encode(pattern_image(1))
    layout["train/cat/exact.webp"] = encode(pattern_image(3), "WEBP", lossless=True)
    near = pattern_image(5).resize((96, 96), Image.Resampling.BICUBIC)
    layout["train/cat/near.jpg"] = encode(near.convert("RGB"), "JPEG", quality=80)
    layout["train/dog/conflict.png"] = png
    layout["test/cat/leak.png"] = encode(pattern_image(7))
    layout["train/cat/truncated.png"] = png[: len(png) // 2]
    layout["train/cat/noise.png"] = bytes(random.Random(3).randrange(256) for _ in range(200))
    layout["train/cat/zero.png"] = b""
    layout["train/unlabelled.png"] = encode(pattern_image(100))
    layout["train/cat/notes.txt"] = b"not an image"
    data = write_image_folder(tmp_path / "images", layout)
    ref = write_image_folder(
        tmp_path / "bench", {"x/b0.png": encode(pattern_image(9)), "x/b1.png": encode(pattern_image(500))}
    )
    result = audit(data, tmp_path / "out", references=[ref], workers=1)
    assert found(result, "exact_duplicate") == {
        "train/cat/exact.webp": "train/cat/003.png",
        "train/dog/conflict.png": "train/cat/001.png",
        "test/cat/leak.png": "train/cat/007.png",
    }
    assert found(result, "near_duplicate") == {"train/cat/near.jpg": "train/cat/005.png"}
    assert set(found(result, "corrupt")) == {"train/cat/truncated.png", "train/cat/noise.png"}
    assert set(found(result, "empty")) == {"train/cat/zero.png"}
    assert set(found(result, "missing_label")) == {"train/unlabelled.png"}
    assert found(result, "conflicting_labels") == {"train/dog/conflict.png": "train/cat/001.png"}
    assert found(result, "split_leakage") == {"test/cat/leak.png": "train/cat/007.png"}
    assert found(result, "contamination") == {"train/cat/009.png": "x/b0.png"}


def test_clean_images_give_no_findings(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "images", _image_layout())
    result = audit(data, tmp_path / "out", workers=1)
    assert result.findings.num_rows == 0
    assert result.report["checks"]["near_duplicate"]["status"] == "ok"


def test_a_crashing_check_is_reported_not_raised(
    planted_text: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curata.checks.duplicates import NearDuplicateCheck
    from curata.errors import CheckFailedError

    def boom(self: object, context: object) -> pa.Table:
        raise RuntimeError("planted failure")

    monkeypatch.setattr(NearDuplicateCheck, "run", boom)
    result = audit(planted_text[0], tmp_path / "out", workers=1)
    status = result.report["checks"]["near_duplicate"]
    assert status["status"] == "failed" and "planted failure" in status["error"]
    assert found(result, "exact_duplicate")  # the other checks still ran
    from curata.audit import AuditSettings

    with pytest.raises(CheckFailedError, match="planted failure"):
        audit(planted_text[0], tmp_path / "out2", workers=1, settings=AuditSettings(strict=True))


def test_hugging_face_image_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    images = [pattern_image(i) for i in range(6)] + [pattern_image(0)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0, 1, 1]})
    ds = ds.cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": ds.select(range(5)), "test": ds.select([5, 6])}).save_to_disk(
        str(tmp_path / "hf")
    )
    result = audit(tmp_path / "hf", tmp_path / "out", workers=1)
    assert found(result, "exact_duplicate") == {"6": "0"}
    assert found(result, "split_leakage") == {"6": "0"}
    assert found(result, "conflicting_labels") == {"6": "0"}


def _duplicate_id_reference(ids: list[str]) -> list[tuple[str, int, list[int]]]:
    """The duplicate-id findings as a dict of every id makes them: (id, row, rows of the id)."""
    rows_by_id: dict[str, list[int]] = {}
    for row, rid in enumerate(ids):
        rows_by_id.setdefault(rid, []).append(row)
    return [(rid, row, rows) for rid, rows in rows_by_id.items() if len(rows) > 1 for row in rows[1:]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicate_ids_found_by_sorting_equal_a_dict_of_every_id(tmp_path: Path, seed: int) -> None:
    from curata.checks.base import Context
    from curata.checks.integrity import DuplicateIdCheck, repeated_id_rows
    from curata.io import read_dataset

    rng = random.Random(seed)
    ids = [f"id-{rng.randrange(300)}" for _ in range(500)] + ["", "z", "a"]
    groups = repeated_id_rows(pa.array(ids))
    assert [g.tolist() for g in groups] == [
        rows
        for _, rows in {rid: [r for r, x in enumerate(ids) if x == rid] for rid in dict.fromkeys(ids)}.items()
        if len(rows) > 1
    ]
    table = pa.table({"id": [f"k{rng.randrange(40)}" for _ in range(120)], "text": ["t"] * 120})
    pq.write_table(table, tmp_path / "d.parquet")
    dataset = read_dataset(tmp_path / "d.parquet", id_column="id")
    assert dataset.description["duplicate_ids"] > 0
    findings = DuplicateIdCheck().run(Context(dataset=dataset, signals={})).to_pylist()
    want = _duplicate_id_reference(table.column("id").to_pylist())
    got = [(f["record_id"], json.loads(f["evidence"])["row"], f["message"]) for f in findings]
    assert [(rid, row) for rid, row, _ in got] == [(rid, row) for rid, row, _ in want]
    for (_, _, message), (rid, _, rows) in zip(got, want, strict=True):
        assert message.startswith(f"id '{rid}' is used by {len(rows)} records (rows {rows[0]}, ")


def test_record_ids_are_read_on_demand_and_equal_the_list(tmp_path: Path) -> None:
    import numpy as np

    from curata.checks.base import Context, RecordIds
    from curata.io import read_dataset

    values = [f"r{i}" for i in range(200_003)]
    pq.write_table(pa.table({"id": values, "text": ["x"] * len(values)}), tmp_path / "d.parquet")
    dataset = read_dataset(tmp_path / "d.parquet", id_column="id")
    ids = Context(dataset=dataset, signals={}).record_ids
    assert isinstance(ids, RecordIds) and not isinstance(ids, list)
    assert len(ids) == len(values)
    assert ids[0] == "r0" and ids[np.int64(123_456)] == "r123456" and ids[-1] == values[-1]
    assert ids[10:13] == values[10:13]
    assert list(ids) == values  # iteration crosses several slices
    assert ids.take(np.array([5, 200_002, 0])) == ["r5", values[-1], "r0"]
