"""Sign-in to the demo webmail through a stand-in OP over real HTTP.

A stand-in OP (webmail_fake_op.py); the end-to-end test with the real broker lives in
tests/e2e.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webmail_fake_op import DROP, FakeOP, spare_key
from webmail_support import BASE_URL, CLIENT_ID, make_config, session_state, sign_in, start_sign_in

from careid_devkit.webmail import create_webmail_app
from careid_devkit.webmail.config import DEFAULT_SCOPES
from careid_devkit.webmail.sessions import looks_like_session_id


def _cookie(webmail_client: FlaskClient) -> str | None:
    cookie = webmail_client.get_cookie("webmail_sid")
    return cookie.value if cookie is not None else None


def test_sign_in_round_trip_uses_pkce_and_nonce_and_shows_who(
    webmail_client: FlaskClient, op: FakeOP
) -> None:
    response = sign_in(webmail_client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"

    authorize = op.authorize_requests[-1]
    assert authorize["code_challenge_method"] == "S256"
    assert set(authorize["scope"].split()) == set(DEFAULT_SCOPES)
    assert {"openid", "nationalrbacaccess", "selectedrole"} <= set(DEFAULT_SCOPES)
    assert "acr_values" not in authorize
    # The verifier sent to the token endpoint is the one behind the challenge (the OP
    # refuses otherwise); the client authenticated with client_secret_basic.
    verifier = op.token_requests[-1]["code_verifier"]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == authorize["code_challenge"]
    assert "client_secret" not in op.token_requests[-1]
    assert len(authorize["nonce"]) >= 16

    page = webmail_client.get("/").get_data(as_text=True)
    assert "Signed in as Alex Morgan" in page
    assert "alex.morgan@nhs.net" in page
    assert "555000000001" in page
    assert "Smartcard (AAL3)" in page
    assert "AAL3_SMARTCARD" in page
    assert "Clinical Practitioner Access Role" in page
    assert "S8000:G8001:R8003" in page
    assert "RX2" in page
    assert "Inbox" in page
    assert 'src="/static/session-status.js"' in page
    assert session_state(webmail_client) == "signed_in"


def test_cookie_holds_only_a_fresh_random_id(webmail_client: FlaskClient, op: FakeOP) -> None:
    callback = start_sign_in(webmail_client)
    before = _cookie(webmail_client)
    assert before is not None and looks_like_session_id(before)
    webmail_client.get(callback)
    after = _cookie(webmail_client)
    assert after is not None and looks_like_session_id(after)
    assert after != before  # rotated at sign-in (session fixation)
    for token in op.issued_id_tokens:
        assert token not in after
    assert webmail_client.get_cookie("session") is None


def test_password_sign_in_is_shown_in_words(webmail_client: FlaskClient, op: FakeOP) -> None:
    op.behaviour.acr = "AAL1_USERPASS"
    op.behaviour.amr = ("pwd",)
    sign_in(webmail_client)
    page = webmail_client.get("/").get_data(as_text=True)
    assert "Password (AAL1)" in page
    assert "Smartcard (AAL3)" not in page


def test_smartcard_link_asks_for_aal3(webmail_client: FlaskClient, op: FakeOP) -> None:
    assert sign_in(webmail_client, "?acr=AAL3_ANY").status_code == 302
    assert op.authorize_requests[-1]["acr_values"] == "AAL3_ANY"
    assert session_state(webmail_client) == "signed_in"


def test_smartcard_asked_but_password_given_is_refused(
    webmail_client: FlaskClient, op: FakeOP
) -> None:
    op.behaviour.acr = "AAL1_USERPASS"
    response = sign_in(webmail_client, "?acr=AAL3_ANY")
    assert response.status_code == 400
    assert "devkit_webmail_assurance_too_low" in response.get_data(as_text=True)
    assert session_state(webmail_client) == "signed_out"


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"nonce": "tampered-nonce"}, "nonce"),
        ({"nonce": DROP}, "nonce missing"),
        ({"aud": "another-client"}, "audience"),
        # authlib alone accepts this one (azp names us); the webmail also checks aud.
        ({"aud": ["another-client"], "azp": CLIENT_ID}, "audience with our azp"),
        ({"iss": "http://evil.example"}, "issuer"),
        ({"exp": 1_000_000}, "expired"),
    ],
)
def test_id_token_that_does_not_check_out_is_refused(
    webmail_client: FlaskClient, op: FakeOP, override: dict[str, object], why: str
) -> None:
    op.behaviour.id_token_overrides = override
    response = sign_in(webmail_client)
    assert response.status_code == 400, why
    page = response.get_data(as_text=True)
    assert "devkit_webmail_signin_failed" in page
    assert "Sign in" in page
    assert session_state(webmail_client) == "signed_out"


def test_id_token_signed_by_another_key_is_refused(webmail_client: FlaskClient, op: FakeOP) -> None:
    # Same kid as the OP's key, different key: the signature cannot verify.
    op.behaviour.sign_id_token_with = spare_key("op-key-1")
    response = sign_in(webmail_client)
    assert response.status_code == 400
    assert session_state(webmail_client) == "signed_out"


def test_callback_from_another_issuer_is_refused(webmail_client: FlaskClient, op: FakeOP) -> None:
    op.behaviour.callback_iss = "http://127.0.0.1:1"  # RFC 9207 mix-up
    response = sign_in(webmail_client)
    assert response.status_code == 400
    assert op.token_requests == []  # the code was never sent anywhere
    assert session_state(webmail_client) == "signed_out"


def test_callback_with_a_foreign_state_is_refused(webmail_client: FlaskClient, op: FakeOP) -> None:
    callback = start_sign_in(webmail_client)
    parts = urlsplit(callback)
    query = parse_qs(parts.query)
    forged = f"/callback?code={query['code'][0]}&state=forged&iss={query['iss'][0]}"
    response = webmail_client.get(forged)
    assert response.status_code == 400
    assert op.token_requests == []
    # A second browser cannot finish the first browser's sign-in either.
    other = webmail_client.application.test_client()
    assert other.get(callback).status_code == 400
    assert session_state(other) == "signed_out"


def test_op_error_on_callback_is_shown_plainly(webmail_client: FlaskClient, op: FakeOP) -> None:
    start_sign_in(webmail_client)
    response = webmail_client.get(f"/callback?error=access_denied&state=x&iss={op.issuer}")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Signing in to the webmail did not finish" in page
    assert "access_denied" not in page  # details go to the log, not the page


def test_unreachable_provider_gives_a_plain_error(op: FakeOP) -> None:
    app = create_webmail_app(make_config(op, issuer="http://127.0.0.1:9"))
    response = app.test_client().get("/login")
    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert "devkit_webmail_provider_unavailable" in page
    assert "cannot reach the sign-in service" in page


def test_discovery_naming_another_issuer_is_refused(
    webmail_client: FlaskClient, op: FakeOP
) -> None:
    op.behaviour.discovery_issuer = "http://evil.example"
    response = webmail_client.get("/login")
    assert response.status_code == 502
    assert op.authorize_requests == []


def test_login_on_another_host_moves_to_the_base_url(webmail_client: FlaskClient) -> None:
    response = webmail_client.get("/login?acr=AAL3_ANY", base_url="http://127.0.0.1:5001")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{BASE_URL}/login?acr=AAL3_ANY"


def test_pages_carry_strict_security_headers(webmail_client: FlaskClient, op: FakeOP) -> None:
    response = webmail_client.get("/")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert f"form-action 'self' {op.issuer}" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert "<script>" not in page and "onclick" not in page
    assert 'href="/login?acr=AAL3_ANY"' in page
    assert "Sign in with smartcard (AAL3)" in page
    with webmail_client.get("/static/session-status.js") as script:
        assert script.status_code == 200
        assert "session-status" in script.get_data(as_text=True)


def test_secret_is_not_in_the_config_repr(op: FakeOP) -> None:
    config = make_config(op)
    assert config.client_secret not in repr(config)
    assert CLIENT_ID in repr(config)


def test_abandoned_sign_ins_do_not_pile_up(
    app: Flask, webmail_client: FlaskClient, op: FakeOP
) -> None:
    for _ in range(12):
        assert webmail_client.get("/login").status_code == 302
    cookie = webmail_client.get_cookie("webmail_sid")
    assert cookie is not None
    services = app.extensions["careid_webmail"]
    data = services.store.load(cookie.value, touch=False)
    assert data is not None
    assert len([k for k in data if k.startswith("_state_")]) == 5
    # The newest one still finishes.
    assert sign_in(webmail_client).status_code == 302
    assert session_state(webmail_client) == "signed_in"
