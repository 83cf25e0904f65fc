"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the page tests.

Playwright never downloads a browser here: it launches Debian's Chromium by path. Screenshots go
to ``SCREENSHOTS`` (tests/screenshots, not committed; CI keeps them as the run's output).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .support import REPO

CHROMIUM = Path(os.environ.get("HPCHUB_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("HPCHUB_SCREENSHOTS", REPO / "tests" / "screenshots"))
PASSWORD = os.environ.get("HPCHUB_PASSWORD", "hpchub-test")


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium (playwright Browser); closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def logged_in_page(browser, hub_url: str, user: str, password: str = PASSWORD, javascript: bool = True):
    """A new page in its own browser context (``javascript=False``: with JavaScript off), logged in
    to the hub as ``user``."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, java_script_enabled=javascript)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{hub_url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(lambda url: "/hub/login" not in url)
    return page


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG as SCREENSHOTS/NAME.png; return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
