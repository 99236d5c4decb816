"""A real audit's report.html, opened in Debian chromium: renders, no errors, no requests."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curata.audit import AuditSettings, audit
from curata.signals.embed import EmbedSettings

from browser import open_page, require_browser
from conftest import encode, pattern_image, random_text, write_image_folder, write_parquet


@pytest.mark.browser
def test_image_audit_report_in_chromium(tmp_path: Path) -> None:
    require_browser()
    layout = {f"train/{c}/{i}.png": encode(pattern_image(i)) for i, c in enumerate("abcabcabc")}
    layout["test/a/leak.png"] = encode(pattern_image(0))
    layout["train/b/broken.png"] = encode(pattern_image(1))[:40]
    data = write_image_folder(tmp_path / "img", layout)
    result = audit(data, tmp_path / "out", workers=1)
    with open_page(tmp_path / "out" / "report.html") as (page, log):
        rows = page.locator("#checks-table tbody tr").count()
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        page.screenshot(path=str(tmp_path / "shot.png"), full_page=True)
    assert not log.errors, log.errors
    assert not log.external, log.external
    assert rows == len(result.report["checks"])
    assert len(widths) >= 2 and all(w > 0 for w in widths), widths


@pytest.mark.browser
def test_text_audit_report_in_chromium(tmp_path: Path) -> None:
    require_browser()
    rng = random.Random(2)
    rows = [{"id": f"d{i}", "text": random_text(rng, 40), "split": "train"} for i in range(12)]
    rows.append({"id": "leak", "text": str(rows[0]["text"]) + " extra words", "split": "test"})
    data = write_parquet(tmp_path / "d.parquet", rows)
    result = audit(data, tmp_path / "out", workers=1)
    assert result.report["checks"]["split_leakage"]["count"] == 1
    with open_page(tmp_path / "out" / "report.html") as (page, log):
        marks = page.locator("mark").count()
    assert not log.errors and not log.external, (log.errors, log.external)
    assert marks >= 1


VALIDATOR = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_findings.py"


def class_image(cls: int, seed: int) -> Image.Image:
    """A noisy picture whose dominant colour is its class (red, green or blue)."""
    rng = np.random.default_rng(seed)
    base = np.array([(200, 40, 40), (40, 170, 60), (40, 70, 200)][cls], dtype=np.float64)
    small = np.clip(base + rng.normal(0, 20, size=(6, 6, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize((48, 48), Image.Resampling.BILINEAR)


@pytest.mark.browser
def test_label_issues_and_embedding_map_in_chromium(tmp_path: Path) -> None:
    require_browser()
    names = ["cat", "dog", "fox"]
    flips = {3: 1, 30: 2, 58: 0}  # row -> the wrong class it is filed under
    layout = {}
    for i in range(90):
        given = flips.get(i, i % 3)
        split = "test" if i % 6 == 0 else "train"
        layout[f"{split}/{names[given]}/{i:03d}.png"] = encode(class_image(i % 3, i))
    data = write_image_folder(tmp_path / "img", layout)
    settings = AuditSettings(embed=EmbedSettings(encoder="pixels"))
    result = audit(data, tmp_path / "out", workers=1, settings=settings)
    planted = {"train/dog/003.png", "test/fox/030.png", "train/cat/058.png"}
    issues = {r["record_id"] for r in result.findings.to_pylist() if r["check"] == "label_issue"}
    assert issues and issues <= planted, issues
    emap = result.report["statistics"]["embedding_map"]
    assert emap["available"] and emap["num_points"] == 90
    if VALIDATOR.exists():
        check = subprocess.run(
            [sys.executable, str(VALIDATOR), str(tmp_path / "out")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout
    with open_page(tmp_path / "out" / "report.html") as (page, log):
        cards = page.locator("#check-label_issue article.li")
        assert cards.count() == len(issues)
        first = cards.first
        assert first.is_visible()
        relabel = first.locator(".relabel").get_attribute("title") or ""
        assert relabel.startswith("given: ") and " → suggested: " in relabel, relabel
        assert first.locator("img").evaluate("e => e.complete && e.naturalWidth > 0")
        svg = page.locator("svg.emap-svg")
        assert svg.is_visible()
        box = svg.bounding_box()
        assert box is not None and box["width"] > 500 and box["height"] > 300
        assert page.locator("svg.emap-svg circle.p").count() == 90
        flagged = page.locator("svg.emap-svg g.flag").count()
        assert flagged == len({r["record_id"] for r in result.findings.to_pylist()})
        assert page.locator(".emap-legend li").count() >= 3
        # Ringing only one check's records hides the other rings.
        page.click("button[data-map-check=label_issue]")
        rings = page.eval_on_selector_all(
            "svg.emap-svg circle.r", "els => els.filter(e => getComputedStyle(e).display !== 'none').length"
        )
        assert rings == len(issues)
        page.click("button[data-map-check='']")
        page.locator("#emap").screenshot(path=str(tmp_path / "map.png"))
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert not log.errors, log.errors
    assert not log.external, log.external
    assert (tmp_path / "map.png").stat().st_size > 5_000
