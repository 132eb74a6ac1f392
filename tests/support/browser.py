"""Debian's Chromium under Playwright, launched the one way the browser tests share.

A test module that needs a browser takes `launched_chromium()` in a module-scoped
fixture and `fresh_page()` per test: each page in a new context, with its own cookies,
as another person at the same workstation would have.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync")


@contextmanager
def launched_chromium(args: Sequence[str] = CHROMIUM_ARGS) -> Iterator[Any]:
    """Headless Chromium, closed afterwards; the test is skipped, saying what to install,
    where Debian's Chromium or Playwright is missing (the CI installs both)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Chromium (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright (dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(args))
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def fresh_page(browser: Any, *, timeout_ms: int) -> Iterator[Any]:
    """A page in a new browser context (no cookies), closed afterwards."""
    context = browser.new_context()
    context.set_default_timeout(timeout_ms)
    try:
        yield context.new_page()
    finally:
        context.close()
