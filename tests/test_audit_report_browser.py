"""A real audit's report.html, opened in Debian chromium: renders, no errors, no requests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from curata.audit import audit

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
