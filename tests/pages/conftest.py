"""Broker pages in Chromium without a server: the in-process app (`card_app_factory`,
with the test sign-in route) answering every request of a fresh browser context.

    def test_x(open_page): page, site = open_page(width=375)

Marked `browser`; skips, naming the Debian package, without Chromium.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import install_test_signin
from card_fixtures import CardAppFactory
from flask import Flask
from page_site import FakeAgent, InProcessSite

from support.browser import launched_chromium

OpenPage = Callable[..., tuple[Any, FakeAgent]]
#: One page state takes a few seconds; a stall fails the test rather than the run.
BROWSER_TEST_SECONDS = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            # Closing a page or context waits without a timeout of its own.
            item.add_marker(pytest.mark.timeout(BROWSER_TEST_SECONDS))


@pytest.fixture(scope="module")
def page_chromium() -> Iterator[Any]:
    # Per module, not per package: tests/pages is no package, so "package" would keep
    # Playwright running for the whole session, and another folder's sync_playwright()
    # (tests/webmail) would then find its event loop already running.
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page_app(card_app_factory: CardAppFactory) -> Flask:
    app = card_app_factory()
    install_test_signin(app)
    return app


@pytest.fixture
def open_page(page_chromium: Any, page_app: Flask) -> Iterator[OpenPage]:
    """`open_page(width=1024)` → (a page in a fresh context on the app, its fake agent)."""
    contexts: list[Any] = []

    def open_one(width: int = 1024, app: Flask | None = None) -> tuple[Any, FakeAgent]:
        context = page_chromium.new_context(viewport={"width": width, "height": 800})
        context.set_default_timeout(10_000)
        contexts.append(context)
        InProcessSite(app or page_app).attach(context)
        agent = FakeAgent()
        agent.attach(context)
        return context.new_page(), agent

    yield open_one
    for context in contexts:
        # Requests still in flight (a held agent call) are dropped, not waited for.
        context.unroute_all(behavior="ignoreErrors")
        context.close()
