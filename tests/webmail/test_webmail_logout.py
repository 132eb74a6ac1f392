"""RP-initiated logout from the demo webmail, against a stand-in OP over real HTTP.

A stand-in OP (webmail_fake_op.py); the end-to-end test with the real broker lives in
tests/e2e.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests
from flask.testing import FlaskClient
from webmail_fake_op import FakeOP
from webmail_support import BASE_URL, CLIENT_ID, session_state, sign_in


def _csrf(webmail_client: FlaskClient) -> str:
    page = webmail_client.get("/").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "the signed-in page has a sign-out form"
    return found.group(1)


def test_logout_ends_the_local_session_and_goes_to_the_op(
    webmail_client: FlaskClient, op: FakeOP
) -> None:
    sign_in(webmail_client)
    response = webmail_client.post("/logout", data={"csrf_token": _csrf(webmail_client)})
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{op.issuer}/logout"
    params = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert params["id_token_hint"] == op.issued_id_tokens[-1]
    assert params["post_logout_redirect_uri"] == f"{BASE_URL}/"
    assert params["client_id"] == CLIENT_ID
    assert len(params["state"]) >= 16
    # Signed out here before the browser even reaches the OP.
    assert session_state(webmail_client) == "signed_out"

    at_op = requests.get(response.headers["Location"], allow_redirects=False, timeout=5)
    assert op.end_session_requests[-1]["id_token_hint"] == op.issued_id_tokens[-1]
    back = urlsplit(at_op.headers["Location"])
    page = webmail_client.get(f"{back.path}?{back.query}").get_data(as_text=True)
    assert "You have signed out of the webmail and of the sign-in service." in page
    assert "Signed in as" not in page


def test_logout_return_with_a_foreign_state_says_nothing(
    webmail_client: FlaskClient, op: FakeOP
) -> None:
    sign_in(webmail_client)
    webmail_client.post("/logout", data={"csrf_token": _csrf(webmail_client)})
    page = webmail_client.get("/?state=not-ours").get_data(as_text=True)
    assert "You have signed out" not in page


def test_logout_without_the_form_token_is_refused(webmail_client: FlaskClient, op: FakeOP) -> None:
    sign_in(webmail_client)
    response = webmail_client.post("/logout", data={"csrf_token": "guessed"})
    assert response.status_code == 400
    assert "csrf_invalid" in response.get_data(as_text=True)
    assert session_state(webmail_client) == "signed_in"
    assert webmail_client.get("/logout").status_code == 405  # no sign-out by a bare link
    assert op.end_session_requests == []


def test_the_form_token_dies_with_the_session(webmail_client: FlaskClient, op: FakeOP) -> None:
    sign_in(webmail_client)
    token = _csrf(webmail_client)
    webmail_client.post("/logout", data={"csrf_token": token})
    # The old form token died with the session.
    assert webmail_client.post("/logout", data={"csrf_token": token}).status_code == 400
