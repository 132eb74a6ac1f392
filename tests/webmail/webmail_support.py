"""Helpers for the webmail tests: its config against the stand-in OP, and the sign-in
round trip a browser makes (webmail → OP over real HTTP → webmail)."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests
from flask.testing import FlaskClient
from webmail_fake_op import FakeOP
from werkzeug.test import TestResponse

from careid_devkit.webmail import WebmailConfig

CLIENT_ID = "webmail"
CLIENT_SECRET = "test-client-secret"
# Flask's test client talks to "localhost"; the webmail's base URL matches it.
BASE_URL = "http://localhost"


def make_config(op: FakeOP, **overrides: object) -> WebmailConfig:
    """The webmail's config for the stand-in OP."""
    settings: dict[str, object] = {
        "issuer": op.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "base_url": BASE_URL,
        "http_timeout_seconds": 5.0,
    }
    settings.update(overrides)
    return WebmailConfig(**settings)  # type: ignore[arg-type]


def start_sign_in(webmail_client: FlaskClient, query: str = "") -> str:
    """Follow /login to the OP; the OP's redirect back to /callback (path and query)."""
    response = webmail_client.get(f"/login{query}")
    assert response.status_code == 302, response.get_data(as_text=True)
    at_op = requests.get(response.headers["Location"], allow_redirects=False, timeout=5)
    assert at_op.status_code == 302, at_op.text
    back = urlsplit(at_op.headers["Location"])
    assert f"{back.scheme}://{back.netloc}" == BASE_URL
    return f"{back.path}?{back.query}"


def sign_in(webmail_client: FlaskClient, query: str = "") -> TestResponse:
    """The whole round trip; the callback's response."""
    return webmail_client.get(start_sign_in(webmail_client, query))


def session_state(webmail_client: FlaskClient) -> str:
    """What /session-status says for this browser."""
    response = webmail_client.get("/session-status")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    state: str = response.get_json()["state"]
    return state
