"""The low_quality check and its metrics: planted bad texts and pictures are found, clean data is not."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFilter

from curata.audit import AuditSettings, audit
from curata.checks.base import Context
from curata.checks.quality import LowQualityCheck, quality_metrics
from curata.engine import get_engine
from curata.errors import ConfigError
from curata.io import read_dataset
from curata.signals.cache import SignalCache
from curata.signals.quality import (
    QualitySettings,
    gibberish_score,
    image_quality_batch,
    text_quality_batch,
)

from conftest import WORDS, encode, pattern_image, random_text, write_image_folder, write_parquet

CONTRACT_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"
ONLY_QUALITY = AuditSettings(checks=("low_quality",))

MASH = [
    "asdkjh qwoeiru zmxncbv lkjasdf poiuqwe hjkl fdsa qwerty uiop zxcv bnm",
    "sdfgsdfg hjkhjk qweqwe zxczxc asdasd fghfgh jkljkl",
    "xkqz vbnm wqpt rrtz lkjh gfds mnbv cxzq plmk oknj",
]

PLANTED_TEXT = {
    "short": ("Click here now", "too_short"),
    "lines": (
        "\n".join(["Buy cheap watches online today"] * 6 + ["Contact us for details about shipping"]),
        "repeated_lines",
    ),
    "ngrams": ("the quick brown fox jumps over the lazy dog " * 5, "repeated_ngrams"),
    "digits": ("12 34 56 78 90 ## %% 11 22 33 44 55 66 77 88 ## 99", "non_alphabetic"),
    "hashtags": ("#ai #ml #data #deep #learning #model #train #cloud #news #today", "symbols"),
    "mash": (MASH[0], "gibberish"),
}


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    """Real English paragraphs (sklearn dataset descriptions, stdlib docstrings) of 20+ words."""
    from curata.demo import real_paragraphs

    return [p for p in real_paragraphs() if len(p.split()) >= 20]


def reasons_by_id(findings: pa.Table) -> dict[str, list[str]]:
    """Record id -> the reasons of its low_quality finding."""
    out: dict[str, list[str]] = {}
    for row in findings.to_pylist():
        if row["check"] == "low_quality":
            out[row["record_id"]] = json.loads(row["evidence"])["reasons"]
    return out


def crisp_image(seed: int, size: int = 64) -> Image.Image:
    """A sharp picture: random blocks (nearest-neighbour scaled) with a few drawn shapes on top."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(cells, "RGB").resize((size, size), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = x0 + int(rng.integers(4, size // 2)), y0 + int(rng.integers(4, size // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x1, y1), outline=colour, width=2)
    return img


def clean_images(n: int) -> dict[str, bytes]:
    """``n`` varied clean pictures: crisp ones and soft (bilinear) ones, PNG and JPEG, a few sizes."""
    out: dict[str, bytes] = {}
    for i in range(n):
        size = 56 + 8 * (i % 3)
        img = crisp_image(i, size) if i % 2 == 0 else pattern_image(1000 + i, size)
        fmt = "JPEG" if i % 5 == 0 else "PNG"
        out[f"clean/{i:03d}.{fmt.lower().replace('jpeg', 'jpg')}"] = encode(img, fmt)
    return out


def planted_images() -> dict[str, tuple[bytes, str]]:
    """Bad pictures by name: (encoded bytes, the reason they must be reported for)."""
    return {
        "black": (encode(Image.new("RGB", (64, 64), (0, 0, 0))), "dark"),
        "white": (encode(Image.new("RGB", (64, 64), (255, 255, 255))), "bright"),
        "blurred": (encode(crisp_image(7, 64).filter(ImageFilter.GaussianBlur(6))), "blurry"),
        "tiny": (encode(crisp_image(8, 64).resize((3, 3))), "tiny"),
        "wide": (encode(crisp_image(9, 64).resize((1000, 10))), "aspect"),
        "flat": (encode(Image.new("RGB", (64, 64), (200, 40, 40))), "flat"),
    }


# ----------------------------------------------------------------------------- metrics


def test_text_metrics_measure_what_they_say() -> None:
    texts = [
        None,
        "   ",
        "one two three",
        "\n".join(["same line here"] * 3 + ["another line"]),
        "a b c d e " * 4,
        "12 34 ## ... word",
    ]
    rows = text_quality_batch(texts, QualitySettings()).to_pylist()
    assert rows[0]["n_words"] == 0 and rows[0]["alpha_words"] is None
    assert rows[1]["n_words"] == 0 and rows[1]["gibberish"] is None
    assert rows[2]["n_words"] == 3 and rows[2]["alpha_words"] == 1.0
    assert rows[2]["dup_line_frac"] == 0.0 and rows[2]["dup_5gram"] == 0.0
    assert rows[3]["n_lines"] == 4
    assert rows[3]["dup_line_frac"] == pytest.approx(0.5)
    assert rows[3]["dup_line_char_frac"] == pytest.approx(28 / (42 + 12))
    # "a b c d e" four times: every 5-gram repeats, and "a b" covers 4 * 2 of 20 characters.
    assert rows[4]["dup_5gram"] == pytest.approx(1.0)
    assert rows[4]["top_2gram"] == pytest.approx(0.4)
    assert rows[4]["dup_10gram"] == pytest.approx(1.0)
    assert rows[5]["alpha_words"] == pytest.approx(0.2)
    assert rows[5]["symbol_ratio"] == pytest.approx(3 / 5)  # two "#" and one "..."


def test_gibberish_separates_english_from_keyboard_mash(paragraphs: list[str]) -> None:
    limit = QualitySettings().max_gibberish
    scores = [s for s in (gibberish_score(p) for p in paragraphs) if s is not None]
    assert len(scores) > 0.9 * len(paragraphs)
    assert max(scores) < limit and 3.0 < float(np.median(scores)) < 4.2
    for mash in MASH:
        score = gibberish_score(mash)
        assert score is not None and score > limit + 0.3, mash
    # Another script: an English letter model has nothing to say.
    assert gibberish_score("это обычный текст на русском языке без латинских букв вообще") is None
    assert gibberish_score("short") is None


def test_image_metrics_measure_what_they_say() -> None:
    items = [
        encode(Image.new("L", (40, 20), 0)),
        encode(Image.new("RGBA", (30, 30), (0, 0, 0, 0))),  # fully transparent: white on white
        encode(crisp_image(1, 64)),
        encode(crisp_image(1, 64).filter(ImageFilter.GaussianBlur(4))),
        encode(Image.new("I;16", (16, 16), 65535)),
        b"not an image",
        None,
    ]
    rows = image_quality_batch(items, QualitySettings(threads=1)).to_pylist()
    black, clear, sharp, soft, deep, broken, missing = rows
    assert (black["width"], black["height"], black["aspect"]) == (40, 20, 2.0)
    assert black["brightness"] == 0 and black["near_black"] == 1.0 and black["entropy"] == 0.0
    assert clear["brightness"] == 255 and clear["near_white"] == 1.0
    assert sharp["contrast"] > 30 and sharp["entropy"] > 3 and sharp["colour_std"] > 30
    assert soft["blur"] < sharp["blur"] / 10
    assert deep["brightness"] == pytest.approx(255, abs=0.5)
    assert broken["error"] == "not an image" and broken["brightness"] is None
    assert missing["error"] == "file not readable"


def test_settings_are_validated_and_fingerprinted() -> None:
    base = QualitySettings()
    assert base.fingerprint("text") != base.fingerprint("image")
    # Thresholds do not change stored metrics; metric parameters do.
    assert QualitySettings(max_blur=5.0, min_words=9).fingerprint("image") == base.fingerprint("image")
    assert QualitySettings(work_side=128).fingerprint("image") != base.fingerprint("image")
    for bad in (
        {"min_words": 0},
        {"min_alpha_words": 1.5},
        {"max_top_ngram": (0.2, 0.2)},
        {"dark_level": 250, "light_level": 10},
        {"max_gibberish": float("nan")},
        {"work_side": 2},
        {"min_mean_word_length": 9.0, "max_mean_word_length": 4.0},
    ):
        with pytest.raises(ConfigError):
            QualitySettings(**bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the check on text


def test_planted_low_quality_texts_are_found(tmp_path: Path, paragraphs: list[str]) -> None:
    clean = paragraphs[:80]
    rows: list[dict[str, Any]] = [{"id": f"clean-{k}", "text": t} for k, t in enumerate(clean)]
    rows += [{"id": name, "text": text} for name, (text, _) in PLANTED_TEXT.items()]
    rows += [{"id": "empty", "text": ""}, {"id": "null", "text": None}]
    data = write_parquet(tmp_path / "d.parquet", rows)
    result = audit(data, tmp_path / "out", workers=1, settings=ONLY_QUALITY, workspace=tmp_path / "ws")
    found = reasons_by_id(result.findings)
    for name, (_, reason) in PLANTED_TEXT.items():
        assert name in found, f"{name} not reported"
        assert reason in found[name], (name, found[name])
    assert "empty" not in found and "null" not in found  # the `empty` check's business
    flagged_clean = [rid for rid in found if rid.startswith("clean-")]
    assert len(flagged_clean) <= 2, flagged_clean
    messages = {r["record_id"]: r for r in result.findings.to_pylist()}
    assert "text is 3 words long (minimum 5)" in messages["short"]["message"]
    assert messages["short"]["severity"] == "warning"
    assert messages["mash"]["message"].startswith("text looks like gibberish")
    evidence = json.loads(messages["lines"]["evidence"])
    assert evidence["dup_line_frac"] == pytest.approx(5 / 7, abs=1e-3) and evidence["n_lines"] == 7


def test_scores_grow_with_how_far_past_the_threshold(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = [{"id": f"ok-{k}", "text": random_text(rng, 30)} for k in range(30)]
    rows += [{"id": "w4", "text": "four words right here"}, {"id": "w1", "text": "hello"}]
    data = write_parquet(tmp_path / "d.parquet", rows)
    result = audit(data, tmp_path / "out", workers=1, settings=ONLY_QUALITY, workspace=tmp_path / "ws")
    by_id = {r["record_id"]: r for r in result.findings.to_pylist()}
    assert set(by_id) == {"w4", "w1"}
    assert by_id["w1"]["score"] > by_id["w4"]["score"] >= 0.5
    assert by_id["w4"]["severity"] == "info" and by_id["w1"]["severity"] == "warning"


def test_dataset_of_short_texts_is_not_flagged_wholesale(tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = [{"text": random_text(rng, rng.randint(2, 6))} for _ in range(60)]
    rows.append({"text": "x"})
    data = write_parquet(tmp_path / "d.parquet", rows)
    result = audit(data, tmp_path / "out", workers=1, settings=ONLY_QUALITY, workspace=tmp_path / "ws")
    found = reasons_by_id(result.findings)
    assert len(found) <= 3, found
    assert all("gibberish" not in r for r in found.values())


def test_systematic_rule_break_reports_only_outliers(tmp_path: Path) -> None:
    """When most texts are number-heavy, only the extreme ones are reported as non-alphabetic."""
    rng = random.Random(6)
    rows = [
        {"text": " ".join(rng.choice([*WORDS[:3], "1", "22", "333", "4.5", "6", "77"]) for _ in range(20))}
        for _ in range(40)
    ]
    rows.append({"text": " ".join(str(rng.randint(0, 999)) for _ in range(20))})
    data = write_parquet(tmp_path / "d.parquet", rows)
    result = audit(data, tmp_path / "out", workers=1, settings=ONLY_QUALITY, workspace=tmp_path / "ws")
    found = reasons_by_id(result.findings)
    non_alpha = [rid for rid, r in found.items() if "non_alphabetic" in r]
    assert non_alpha and len(non_alpha) <= 3, found


# ----------------------------------------------------------------------------- the check on images


def test_planted_low_quality_images_are_found(tmp_path: Path) -> None:
    layout = clean_images(36)
    bad = planted_images()
    layout.update({f"bad/{name}.png": data for name, (data, _) in bad.items()})
    layout["bad/broken.png"] = b"\x89PNG not really"
    layout["bad/zero.png"] = b""
    data = write_image_folder(tmp_path / "img", layout)
    result = audit(data, tmp_path / "out", workers=1, settings=ONLY_QUALITY, workspace=tmp_path / "ws")
    found = reasons_by_id(result.findings)
    for name, (_, reason) in bad.items():
        rid = f"bad/{name}.png"
        assert rid in found, f"{name} not reported"
        assert reason in found[rid], (name, found[rid])
    assert "bad/broken.png" not in found and "bad/zero.png" not in found  # corrupt / empty checks
    flagged_clean = [rid for rid in found if rid.startswith("clean/")]
    assert len(flagged_clean) <= 1, {rid: found[rid] for rid in flagged_clean}
    by_id = {r["record_id"]: r for r in result.findings.to_pylist()}
    assert "image is very dark (mean brightness 0/255" in by_id["bad/black.png"]["message"]
    assert "image is tiny (3x3 pixels" in by_id["bad/tiny.png"]["message"]
    assert "1000x10" in by_id["bad/wide.png"]["message"]
    # Blur is judged against the dataset (here a mix of sharp and soft pictures): reported, maybe as info.
    assert all(
        r["severity"] == "warning" for rid, r in by_id.items() if rid.startswith("bad/") and "blur" not in rid
    )


def test_small_clean_icons_are_not_flagged(tmp_path: Path) -> None:
    """Small, soft, mostly-white icons: absolute size/blur/brightness limits alone would flag them all."""
    layout: dict[str, bytes] = {}
    for i in range(40):
        img = Image.new("RGB", (12, 12), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        rng = np.random.default_rng(i)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        draw.ellipse((2, 2, 9 + int(rng.integers(0, 3)), 9), fill=colour)
        layout[f"icons/{i:03d}.png"] = encode(img.filter(ImageFilter.SMOOTH))
    data = write_image_folder(tmp_path / "icons", layout)
    result = audit(data, tmp_path / "out", workers=1, settings=ONLY_QUALITY, workspace=tmp_path / "ws")
    assert len(reasons_by_id(result.findings)) <= 1


def test_quality_metrics_are_cached_in_the_workspace(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "img", clean_images(8))
    dataset = read_dataset(data)
    cache = SignalCache(tmp_path / "ws")

    def context() -> Context:
        return Context(dataset, {}, settings={"engine": get_engine("local", 1), "cache": cache})

    first = quality_metrics(context())
    assert (first.computed, first.cached) == (8, 0)
    second = quality_metrics(context())
    assert (second.computed, second.cached) == (0, 8)
    assert first.table.equals(second.table)
    # Without engine and cache in the settings the check still runs (single process, no cache).
    assert LowQualityCheck().run(Context(dataset, {})).num_rows == 0


@pytest.mark.skipif(
    not CONTRACT_TOOL.exists(), reason="../shared/tools/check_findings.py not beside the repo"
)
def test_findings_pass_the_contract(tmp_path: Path) -> None:
    rng = random.Random(11)
    rows = [{"id": f"t{k}", "text": random_text(rng, 25)} for k in range(30)]
    rows += [{"id": name, "text": text} for name, (text, _) in PLANTED_TEXT.items()]
    rows.append({"id": "blank", "text": "  "})
    text_data = write_parquet(tmp_path / "d.parquet", rows)
    layout = clean_images(24)
    layout.update({f"bad/{name}.png": data for name, (data, _) in planted_images().items()})
    image_data = write_image_folder(tmp_path / "img", layout)
    settings = AuditSettings(checks=("low_quality", "empty", "corrupt"))
    for name, data in (("text", text_data), ("images", image_data)):
        out = tmp_path / f"out-{name}"
        result = audit(data, out, workers=1, settings=settings, workspace=tmp_path / "ws")
        assert result.report["checks"]["low_quality"]["status"] == "ok"
        assert result.report["checks"]["low_quality"]["count"] >= 6
        proc = subprocess.run(
            [sys.executable, str(CONTRACT_TOOL), str(out)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
