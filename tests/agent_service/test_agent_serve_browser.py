"""A real browser: Debian's Chromium (headless, driven by Playwright) fetches a token from
the agent for a page on an allowed origin, and cannot for a page on another origin.

The pages are served from 127.0.0.1, which Chromium would treat as the same (loopback)
address space as the agent; `--ip-address-space-overrides` makes it treat their ports as
public, so the browser applies the rules that guard a loopback service from the web.
What Chromium 156 does with them (checked here): Private Network Access preflights
(`Access-Control-Request-Private-Network`) are gone, replaced by Local Network Access —
a per-site permission the person grants at a prompt, or a trust grants by enterprise
policy (`LoopbackNetworkAllowedForUrls`, Chrome/Edge 146+, or the broader
`LocalNetworkAccessAllowedForUrls`). Without it the request never leaves the browser;
with it, the browser sends an ordinary CORS preflight, and the agent's CORS answer
decides. The agent still answers PNA preflights for older Chromium-based browsers.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from agent_service_support import READER, CardSlot, new_challenge

from careid_protocol.token import verify_token
from conftest import StartAgent

pytestmark = [pytest.mark.browser, pytest.mark.pcsc]

CHROMIUM = "/usr/bin/chromium"
PAGE = b"<!doctype html><meta charset=utf-8><title>Sign in</title><p>Sign in with your card"


def _page_server() -> ThreadingHTTPServer:
    class Page(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[str, str]]:
    """Two page origins: the sign-in page the agent allows, and a stranger."""
    servers = [_page_server(), _page_server()]
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def chromium(pages: tuple[str, str]) -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Chromium (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright (dev extra)")
    public = ",".join(f"{origin.removeprefix('http://')}=public" for origin in pages)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-default-apps",
                f"--ip-address-space-overrides={public}",
            ],
        )
        yield chromium
        chromium.close()


FETCH_TOKEN = """async ([agent, challenge]) => {
  try {
    const response = await fetch(agent + "/v1/authenticate", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({challenge}),
    });
    return {status: response.status, body: await response.json()};
  } catch (error) {
    return {failed: String(error)};
  }
}"""

LISTEN = """([agent]) => {
  window.cardEvents = [];
  const source = new EventSource(agent + "/v1/events");
  for (const name of ["card-inserted", "card-removed"]) {
    source.addEventListener(name, (e) => window.cardEvents.push([name, JSON.parse(e.data)]));
  }
}"""


def _open(chromium: Any, origin: str, *, allow_local: bool = True) -> Any:
    context = chromium.new_context()
    if allow_local:
        context.grant_permissions(["local-network-access"], origin=origin)
    page = context.new_page()
    page.goto(origin + "/")
    return page


def test_an_allowed_page_gets_a_token_and_another_cannot(
    slot: CardSlot,
    start_agent: StartAgent,
    chromium: Any,
    pages: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    allowed, stranger = pages
    slot.insert()
    agent = start_agent(allowed_origins=[allowed])
    caplog.set_level(logging.DEBUG, logger="careid_agent.http_api")

    page = _open(chromium, allowed)
    challenge = new_challenge()
    result = page.evaluate(FETCH_TOKEN, [agent.url, challenge])
    assert result.get("status") == 200, result
    verify_token(result["body"], allowed, challenge)
    assert "OPTIONS /v1/authenticate" in caplog.text  # a real CORS preflight came first

    # The page can also follow the card: it sees the card leave and come back.
    page.evaluate(LISTEN, [agent.url])
    page.wait_for_function("window.cardEvents.length >= 1")  # the initial card-inserted
    slot.remove()
    slot.insert()
    page.wait_for_function("window.cardEvents.length >= 3", timeout=10000)
    names = [name for name, _ in page.evaluate("window.cardEvents")]
    assert names == ["card-inserted", "card-removed", "card-inserted"]
    assert all(data["reader"] == READER for _, data in page.evaluate("window.cardEvents"))
    page.context.close()

    before = slot.commands
    caplog.clear()
    other = _open(chromium, stranger)
    refused = other.evaluate(FETCH_TOKEN, [agent.url, new_challenge()])
    assert "failed" in refused, refused  # CORS: the browser never hands the page a reply
    assert "refused: origin_not_allowed" in caplog.text
    assert slot.commands == before  # and the card was never touched
    other.context.close()


def test_chromium_156_asks_before_a_public_page_reaches_loopback(
    slot: CardSlot,
    start_agent: StartAgent,
    chromium: Any,
    pages: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    allowed, _ = pages
    agent = start_agent(allowed_origins=[allowed])
    caplog.set_level(logging.DEBUG, logger="careid_agent.http_api")
    page = _open(chromium, allowed, allow_local=False)
    result = page.evaluate(FETCH_TOKEN, [agent.url, new_challenge()])
    # No Local Network Access permission: Chromium refuses before anything is sent.
    assert "failed" in result, result
    assert "/v1/authenticate" not in caplog.text
    page.context.close()
