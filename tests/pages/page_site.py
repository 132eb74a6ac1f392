"""The in-process broker app in Debian's Chromium, with no server.

Every request the page makes to the app's origin is answered by the Flask test client
(`InProcessSite`), so the page's own scripts, cookies, CSP and forms run as they do
behind gunicorn; the workstation agent's address is answered by the test (`FakeAgent`):
unreachable, or holding a request open as the PIN prompt does.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from axe_playwright_python.sync_playwright import Axe
from flask import Flask

ORIGIN = "http://localhost:5000"
AGENT = "http://127.0.0.1:47600"
#: The WCAG 2.2 AA rules of axe-core (and the 2.0/2.1 A and AA ones they include).
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PHONE_WIDTH = 375


class InProcessSite:
    """Route one browser context's requests for `ORIGIN` to a Flask app."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client(use_cookies=False)

    def attach(self, context: Any) -> None:
        context.route(f"{ORIGIN}/**", self._answer)

    def _answer(self, route: Any, _request: Any) -> None:
        sent = route.request
        parts = urlsplit(sent.url)
        headers = {
            name: value
            for name, value in sent.all_headers().items()
            if name.lower() not in ("host", "content-length") and not name.startswith(":")
        }
        response = self.client.open(
            parts.path + (f"?{parts.query}" if parts.query else ""),
            method=sent.method,
            headers=headers,
            data=sent.post_data_buffer,
            base_url=ORIGIN,
        )
        answered = [
            {"name": name, "value": value}
            for name, value in response.headers.items()
            if name.lower() != "content-length"
        ]
        body = response.get_data()
        response.close()  # a static file's handle
        route.fulfill(status=response.status_code, headers=_merged(answered), body=body)


def _merged(headers: list[dict[str, str]]) -> dict[str, str]:
    # Playwright takes one value per name; several Set-Cookie lines go joined by "\n".
    merged: dict[str, str] = {}
    for header in headers:
        name = header["name"]
        if name in merged:
            separator = "\n" if name.lower() == "set-cookie" else ", "
            merged[name] = merged[name] + separator + header["value"]
        else:
            merged[name] = header["value"]
    return merged


class FakeAgent:
    """The agent's address: refused (`unreachable`), held open as while the PIN prompt
    is up (`hold`), or signing with a simulated card (`card`, a `SimulatedAgent`)."""

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.mode = "unreachable"
        self.card: Any = None

    def attach(self, context: Any) -> None:
        context.route(f"{AGENT}/**", self._answer)

    def use_card(self, card: Any) -> None:
        self.mode, self.card = "card", card

    def _answer(self, route: Any, _request: Any) -> None:
        sent = route.request
        if self.mode == "unreachable":
            route.abort("connectionrefused")
            return
        cors = {
            "Access-Control-Allow-Origin": ORIGIN,
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Allow-Private-Network": "true",
            "Content-Type": "application/json",
        }
        path = urlsplit(sent.url).path
        if sent.method == "OPTIONS":
            route.fulfill(status=204, headers=cors)
        elif self.mode == "hold" and path == "/v1/authenticate":
            self.held.append(route)  # answered never: the PIN prompt still open
        elif path == "/v1/status":
            card = self.card
            status = {"version": "careid-agent/test", "readers": ["Test reader"]}
            if card is not None:
                status |= {
                    "cardPresent": True,
                    "card": {"holderName": card.profile.name, "uuid": card.uuid},
                }
            route.fulfill(status=200, headers=cors, body=json.dumps(status))
        elif path == "/v1/authenticate":
            challenge = json.loads(sent.post_data or "{}")["challenge"]
            route.fulfill(status=200, headers=cors, body=json.dumps(self.card.sign(challenge)))
        else:
            route.fulfill(status=200, headers=cors, body="{}")


def axe_violations(page: Any) -> list[str]:
    """axe-core's WCAG 2.2 AA violations on the page, one line each (none: [])."""
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}})
    lines = []
    for violation in results.response["violations"]:
        targets = [" ".join(map(str, node["target"])) for node in violation["nodes"]]
        lines.append(f"{violation['id']} ({violation['impact']}): {targets[:5]}")
    return lines


def sideways_overflow(page: Any) -> int:
    """How many pixels the page is wider than the viewport (0: no sideways scrolling)."""
    width: int = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    )
    return max(0, width - page.viewport_size["width"])
