"""An RP's forms POSTed from another site, in a real browser (Debian's Chromium driven by
Playwright): the broker's app on localhost, a relying party's page on 127.0.0.1.

Only a browser applies SameSite: it keeps the broker's Lax cookies off the RP page's
cross-site POSTs to /authorize (OIDC Core §3.1.2.1) and /logout (RP-Initiated Logout §2)
and sends them on top-level GETs.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from broker_support import DEMO_PASSWORD, AppFactory, broker_of
from flask import Flask
from oidc_support import (
    ALEX,
    POST_LOGOUT,
    REDIRECT,
    Browser,
    TestRelyingParty,
    make_oidc_app,
    pkce_pair,
    query_of,
)
from werkzeug.serving import make_server

from support.browser import fresh_page, launched_chromium

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelyingPartyPage:
    """The RP's own sign-out page on 127.0.0.1 (another site): a form POSTing to /logout."""

    def __init__(self) -> None:
        self.html = ""
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = page.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/signing-out"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def sign_out_form(self, action: str, fields: dict[str, str]) -> None:
        inputs = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in fields.items()
        )
        self.html = (
            f'<!doctype html><form method="post" action="{escape(action)}">{inputs}'
            '<button type="submit">Sign out</button></form>'
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Served:
    app: Flask
    url: str
    rp_page: RelyingPartyPage


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    with fresh_page(chromium, timeout_ms=TIMEOUT_MS) as tab:
        yield tab


@pytest.fixture
def served(app_factory: AppFactory, tmp_path: Path, test_rp: TestRelyingParty) -> Iterator[Served]:
    port = _free_port()
    origin = f"http://localhost:{port}"
    app = make_oidc_app(
        app_factory, tmp_path, backchannel_uri=test_rp.url, broker={"issuer": origin}
    )
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    rp_page = RelyingPartyPage()
    try:
        yield Served(app=app, url=origin, rp_page=rp_page)
    finally:
        server.shutdown()
        rp_page.close()


def _signs_in_to_the_rp(served: Served, page: Any) -> dict[str, Any]:
    """Alex signs in by password in the browser for the RP; the RP's tokens."""
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": "rp",
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": "in",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    callback: list[str] = []

    def rp_callback(route: Any) -> None:
        callback.append(route.request.url)
        route.fulfill(status=200, body="RP: signed in")

    page.route(f"{REDIRECT}*", rp_callback)
    page.goto(f"{served.url}/authorize?{urllib.parse.urlencode(query)}")
    page.fill("input[name=email]", ALEX)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("form[method=post] button[type=submit]")
    page.wait_for_url(f"{REDIRECT}*")
    rp = Browser(served.app.test_client())
    form = {
        "grant_type": "authorization_code",
        "code": query_of(callback[-1])["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    redeemed = rp.token(form)
    assert redeemed.status_code == 200, redeemed.get_data(as_text=True)
    tokens: dict[str, Any] = redeemed.get_json()
    return tokens


def _requests_to(page: Any, path: str) -> list[str]:
    """The methods of the page's requests to `path` from now on, in order."""
    methods: list[str] = []
    page.on(
        "request",
        lambda request: (
            methods.append(request.method)
            if urllib.parse.urlsplit(request.url).path == path
            else None
        ),
    )
    return methods


def test_an_rps_cross_site_logout_form_really_signs_the_person_out(
    served: Served, page: Any, test_rp: TestRelyingParty
) -> None:
    tokens = _signs_in_to_the_rp(served, page)
    broker = broker_of(served.app)
    assert len(broker.repos.sessions.active_for_account(ALEX)) == 1
    landed: list[str] = []

    def signed_out(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, body="RP: you are signed out")

    page.route(f"{POST_LOGOUT}*", signed_out)
    served.rp_page.sign_out_form(
        f"{served.url}/logout",
        {
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": POST_LOGOUT,
            "state": "bye",
        },
    )
    methods = _requests_to(page, "/logout")
    page.goto(served.rp_page.url)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{POST_LOGOUT}*")

    assert landed == [f"{POST_LOGOUT}?state=bye"]
    assert broker.repos.sessions.active_for_account(ALEX) == [], (
        "the RP was told of a sign-out that never happened"
    )
    assert methods == ["POST", "GET"]  # the cookieless POST went on by GET
    refreshed = Browser(served.app.test_client()).token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    assert broker.oidc.backchannel.deliver_due().delivered == 1
    assert test_rp.wait_for(1)[0].path == "/backchannel-logout"
    # The next person at this browser is not signed in as Alex.
    page.goto(f"{served.url}/login")
    assert "You are signed in" not in page.locator("main").inner_text()


def test_an_rps_cross_site_logout_form_without_a_hint_asks_the_signed_in_person(
    served: Served, page: Any
) -> None:
    _signs_in_to_the_rp(served, page)
    served.rp_page.sign_out_form(
        f"{served.url}/logout", {"client_id": "rp", "post_logout_redirect_uri": POST_LOGOUT}
    )
    page.goto(served.rp_page.url)
    page.get_by_role("button", name="Sign out").click()
    # Not told "You have signed out" while still signed in: asked first, as by GET.
    page.get_by_text("Test RP asked to sign you out").wait_for()
    assert len(broker_of(served.app).repos.sessions.active_for_account(ALEX)) == 1
    page.get_by_role("button", name="Sign out of every service").click()
    page.get_by_role("heading", name="You have signed out").wait_for()
    assert broker_of(served.app).repos.sessions.active_for_account(ALEX) == []


@pytest.mark.parametrize("prompt", [None, "none"])
def test_an_rps_cross_site_authorization_form_gets_single_sign_on(
    served: Served, page: Any, prompt: str | None
) -> None:
    """Alex is signed in; another RP page POSTs an authorization request. Answered
    without the cookies, Alex would be sent to the login page (or the RP told
    login_required) and the browser's cookie replaced; carried on by GET, the RP gets
    its code from the sign-in Alex has."""
    _signs_in_to_the_rp(served, page)
    browser_cookie = {c["name"]: c["value"] for c in page.context.cookies()}["careid-browser"]
    _, challenge = pkce_pair()
    fields = {
        "response_type": "code",
        "client_id": "rp",
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": "by-post",
        "nonce": "n-2",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if prompt is not None:
        fields["prompt"] = prompt
    answered: list[str] = []

    def rp_callback(route: Any) -> None:
        answered.append(route.request.url)
        route.fulfill(status=200, body="RP: signed in")

    page.route(f"{REDIRECT}*", rp_callback)
    methods = _requests_to(page, "/authorize")
    served.rp_page.sign_out_form(f"{served.url}/authorize", fields)  # any POST form
    page.goto(served.rp_page.url)
    page.get_by_role("button").click()
    page.wait_for_url(f"{REDIRECT}*")

    answer = query_of(answered[-1])
    assert answer["state"] == "by-post" and "code" in answer, answer
    assert methods == ["POST", "GET"]
    assert {c["name"]: c["value"] for c in page.context.cookies()}["careid-browser"] == (
        browser_cookie
    )
    assert len(broker_of(served.app).repos.sessions.active_for_account(ALEX)) == 1
