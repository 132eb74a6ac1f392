"""The webmail in a real browser: Debian's Chromium (headless, driven by Playwright).

Checks what only a browser can: the strict CSP lets the page's own script run and the
sign-out form's redirect chain through the OP; the script notices a back-channel logout
and tells the person their session has ended. A stand-in OP (webmail_fake_op.py); the
end-to-end test with the real broker lives in tests/e2e.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from webmail_fake_op import FakeOP
from webmail_support import CLIENT_ID, CLIENT_SECRET, make_config

from careid_devkit.webmail import create_webmail_app
from careid_devkit.webmail.commands import make_webmail_server
from support.browser import launched_chromium

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[str, FakeOP]]:
    """The webmail served on localhost:PORT, and its own stand-in OP."""
    port = _free_port()
    base = f"http://localhost:{port}"
    op = FakeOP(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=f"{base}/callback")
    op.start()
    app = create_webmail_app(make_config(op, base_url=base, status_poll_seconds=1))
    server = make_webmail_server(app, "127.0.0.1", port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, op
    server.shutdown()
    server.server_close()
    op.stop()


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser.new_page()


def test_sign_in_session_end_and_sign_out_in_chromium(page: Any, chain: tuple[str, FakeOP]) -> None:
    base, op = chain
    csp_violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )

    page.goto(f"{base}/")
    page.get_by_role("link", name="Sign in", exact=True).click()
    page.wait_for_url(f"{base}/")
    assert page.get_by_role("heading", name="Signed in as Alex Morgan").is_visible()
    assert page.locator("[data-claim=acr]").inner_text().startswith("Smartcard (AAL3)")
    assert page.get_by_role("table", name="National RBAC roles from your Care Identity")

    # The OP ends the session behind the page's back; the page's script notices.
    posted = requests.post(
        f"{base}/backchannel-logout", data={"logout_token": op.logout_token()}, timeout=5
    )
    assert posted.status_code == 200
    page.wait_for_selector("#session-ended", state="visible", timeout=5000)
    assert page.locator("#mailbox").is_hidden()
    assert "smartcard was removed" in page.get_by_role("alert").inner_text()

    # Sign in again from the message, then sign out through the OP and back.
    page.get_by_role("link", name="Sign in again").click()
    page.wait_for_url(f"{base}/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/?state=*")
    assert page.get_by_role("status").inner_text().startswith("You have signed out")
    assert op.end_session_requests[-1]["id_token_hint"] == op.issued_id_tokens[-1]
    assert csp_violations == []
