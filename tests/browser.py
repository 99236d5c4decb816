"""Open a local page in Debian chromium (Playwright), recording errors and any non-local request."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Background networking off: this machine has no network, and the page must need none.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class PageLog:
    """What the page did: console errors / page errors, and requests that left file:// and data:."""

    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def require_browser() -> None:
    """Skip the calling test unless chromium and playwright are installed (CI installs both)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed")


@contextmanager
def open_page(page_file: Path) -> Iterator[tuple[Any, PageLog]]:
    """Yield (playwright page, log) with ``page_file`` loaded in a 1280x900 viewport."""
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: log.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.errors.append(str(e)))
            page.on(
                "request",
                lambda r: log.external.append(r.url) if not r.url.startswith(("file://", "data:")) else None,
            )
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            yield page, log
        finally:
            browser.close()
