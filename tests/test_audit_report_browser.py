"""A real audit's report.html, opened in Debian chromium: renders, no errors, no requests."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from curata.audit import audit
from test_report_html import CHROMIUM, CHROMIUM_ARGS

from conftest import encode, pattern_image, random_text, write_image_folder, write_parquet


def _open(page_file: Path, shot: Path) -> tuple[list[str], list[str], dict[str, object]]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    external: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request",
                lambda r: external.append(r.url) if not r.url.startswith(("file://", "data:")) else None,
            )
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            facts = {
                "rows": page.locator("#checks-table tbody tr").count(),
                "widths": page.eval_on_selector_all(
                    "img", "els => els.map(e => e.complete ? e.naturalWidth : 0)"
                ),
                "marks": page.locator("mark").count(),
                "svgs": page.locator("svg").count(),
            }
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return errors, external, facts


def _need_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed")


@pytest.mark.browser
def test_image_audit_report_in_chromium(tmp_path: Path) -> None:
    _need_browser()
    layout = {f"train/{c}/{i}.png": encode(pattern_image(i)) for i, c in enumerate("abcabcabc")}
    layout["test/a/leak.png"] = encode(pattern_image(0))
    layout["train/b/broken.png"] = encode(pattern_image(1))[:40]
    data = write_image_folder(tmp_path / "img", layout)
    result = audit(data, tmp_path / "out", workers=1)
    errors, external, facts = _open(tmp_path / "out" / "report.html", tmp_path / "shot.png")
    assert not errors, errors
    assert not external, external
    assert facts["rows"] == len(result.report["checks"])
    widths = facts["widths"]
    assert isinstance(widths, list) and len(widths) >= 2 and all(w > 0 for w in widths), widths


@pytest.mark.browser
def test_text_audit_report_in_chromium(tmp_path: Path) -> None:
    _need_browser()
    rng = random.Random(2)
    rows = [{"id": f"d{i}", "text": random_text(rng, 40), "split": "train"} for i in range(12)]
    rows.append({"id": "leak", "text": str(rows[0]["text"]) + " extra words", "split": "test"})
    data = write_parquet(tmp_path / "d.parquet", rows)
    result = audit(data, tmp_path / "out", workers=1)
    assert result.report["checks"]["split_leakage"]["count"] == 1
    errors, external, facts = _open(tmp_path / "out" / "report.html", tmp_path / "shot.png")
    assert not errors and not external, (errors, external)
    assert isinstance(facts["marks"], int) and facts["marks"] >= 1
