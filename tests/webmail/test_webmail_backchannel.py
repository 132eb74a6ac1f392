"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0) at the demo webmail.

Logout tokens are real RS256 JWS signed by a stand-in OP (webmail_fake_op.py) whose JWKS
the webmail fetches over HTTP; the end-to-end test with the real broker lives in
tests/e2e.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webmail_fake_op import DEMO_USER, DROP, LOGOUT_EVENT, FakeOP, jwt_claims, rsa_key, spare_key
from webmail_support import make_config, session_state, sign_in

from careid_devkit.webmail import create_webmail_app

ENDED_TEXT = (
    "Your session has ended because your smartcard was removed or you were signed out elsewhere."
)


def _post(app: Flask, token: str) -> Any:
    # The OP calls from its server: no browser cookies.
    return app.test_client().post("/backchannel-logout", data={"logout_token": token})


def test_valid_logout_token_ends_that_session_only(app: Flask, op: FakeOP) -> None:
    first, second = app.test_client(), app.test_client()
    sign_in(first)
    first_sid = op.issued_sids[-1]
    sign_in(second)
    assert op.issued_sids[-1] != first_sid

    response = _post(app, op.logout_token(sid=first_sid))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"

    assert session_state(first) == "ended"
    page = first.get("/").get_data(as_text=True)
    assert ENDED_TEXT in page
    assert "Sign in again" in page
    assert "Signed in as" not in page
    assert session_state(second) == "signed_in"


def test_sub_only_token_ends_every_session_of_the_user(app: Flask, op: FakeOP) -> None:
    browsers = [app.test_client(), app.test_client()]
    for browser in browsers:
        sign_in(browser)
    response = _post(app, op.logout_token(sid=DROP, sub=DEMO_USER["sub"]))
    assert response.status_code == 200
    assert [session_state(b) for b in browsers] == ["ended", "ended"]


def test_token_for_an_unknown_session_is_accepted_and_changes_nothing(
    app: Flask, webmail_client: FlaskClient, op: FakeOP
) -> None:
    sign_in(webmail_client)
    assert _post(app, op.logout_token(sid="someone-elses-session")).status_code == 200
    assert session_state(webmail_client) == "signed_in"


def test_signing_in_again_after_the_end_works(
    app: Flask, webmail_client: FlaskClient, op: FakeOP
) -> None:
    sign_in(webmail_client)
    _post(app, op.logout_token())
    assert session_state(webmail_client) == "ended"
    sign_in(webmail_client)
    assert session_state(webmail_client) == "signed_in"
    page = webmail_client.get("/").get_data(as_text=True)
    assert "Signed in as Alex Morgan" in page
    assert '<div class="notice ended" role="alert">' not in page  # only the script's, hidden


def test_key_rotation_is_followed(app: Flask, webmail_client: FlaskClient, op: FakeOP) -> None:
    sign_in(webmail_client)  # the webmail has the OP's JWKS cached now
    new_key = rsa_key("op-key-2")
    op.extra_keys.append(new_key)
    assert _post(app, op.logout_token(key=new_key)).status_code == 200
    assert session_state(webmail_client) == "ended"


def _now() -> int:
    return int(time.time())


# Back-Channel Logout §2.6: each a token the webmail must refuse, and the check (as
# logged) that refuses it, so a case cannot pass by tripping over another check.
REFUSALS: dict[str, tuple[Callable[[FakeOP], str], str]] = {
    # Same kid as the OP's key, another key: the signature cannot verify.
    "bad signature": (lambda op: op.logout_token(key=spare_key("op-key-1")), "bad_signature"),
    "unknown key": (
        lambda op: op.logout_token(key=spare_key("not-published")),
        "invalid_key_id",
    ),
    "wrong aud": (lambda op: op.logout_token(aud="another-client"), "'aud'"),
    "wrong iss": (lambda op: op.logout_token(iss="http://evil.example"), "'iss'"),
    "no iss": (lambda op: op.logout_token(iss=DROP), "Missing claim: 'iss'"),
    "nonce present": (lambda op: op.logout_token(nonce="n-0S6_WzA2Mj"), "nonce"),
    "missing events": (lambda op: op.logout_token(events=DROP), "logout event"),
    "wrong event": (
        lambda op: op.logout_token(events={"http://example.com/other": {}}),
        "logout event",
    ),
    "event not an object": (
        lambda op: op.logout_token(
            events={"http://schemas.openid.net/event/backchannel-logout": "yes"}
        ),
        "logout event",
    ),
    "missing sid and sub": (
        lambda op: op.logout_token(sid=DROP, sub=DROP),
        "neither sid nor sub",
    ),
    "missing jti": (lambda op: op.logout_token(jti=DROP), "Missing claim: 'jti'"),
    "missing iat": (lambda op: op.logout_token(iat=DROP), "Missing claim: 'iat'"),
    "iat too old": (
        lambda op: op.logout_token(iat=_now() - 3600, exp=_now() + 60),
        "too old",
    ),
    "iat in the future": (
        lambda op: op.logout_token(iat=_now() + 3600, exp=_now() + 7200),
        "in the future",
    ),
    "expired": (lambda op: op.logout_token(iat=_now() - 200, exp=_now() - 100), "expired"),
    "typed as an ID token": (lambda op: op.logout_token(typ="JWT"), "typ 'JWT'"),
    "ID token instead": (lambda op: op.issued_id_tokens[-1], "typ 'JWT'"),
    "untyped ID token": (
        lambda op: op.sign(
            {**jwt_claims(op.issued_id_tokens[-1]), "events": {LOGOUT_EVENT: {}}, "jti": "j1"},
            typ="",
        ),
        "nonce",
    ),
    "not a JWT": (lambda op: "not-a-token", "not a compact JWS"),
    "empty": (lambda op: "", "missing"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_logout_tokens_are_refused_and_the_session_is_left_alone(
    app: Flask,
    webmail_client: FlaskClient,
    op: FakeOP,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sign_in(webmail_client)
    build, reason = REFUSALS[case]
    with caplog.at_level(logging.WARNING, logger="careid_devkit.webmail"):
        response = _post(app, build(op))
    assert response.status_code == 400, case
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"
    refusals = [r.getMessage() for r in caplog.records if "logout refused" in r.getMessage()]
    assert len(refusals) == 1 and reason in refusals[0], refusals
    assert session_state(webmail_client) == "signed_in"


def test_replayed_jti_is_refused(app: Flask, webmail_client: FlaskClient, op: FakeOP) -> None:
    sign_in(webmail_client)
    # A genuine token for some other session is used once...
    first = op.logout_token(sid="another-session", jti="jti-replayed")
    assert _post(app, first).status_code == 200
    # ...then its jti comes back on a token aimed at this browser's session.
    replay = op.logout_token(jti="jti-replayed")
    response = _post(app, replay)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert session_state(webmail_client) == "signed_in"
    # The same token sent twice is refused the second time too.
    assert _post(app, first).status_code == 400


def test_forged_token_cannot_use_up_a_jti(
    app: Flask, webmail_client: FlaskClient, op: FakeOP
) -> None:
    sign_in(webmail_client)
    forged = op.logout_token(key=spare_key("op-key-1"), jti="jti-genuine")
    assert _post(app, forged).status_code == 400
    assert _post(app, op.logout_token(jti="jti-genuine")).status_code == 200
    assert session_state(webmail_client) == "ended"


def test_logout_must_be_a_form_post(app: Flask, webmail_client: FlaskClient, op: FakeOP) -> None:
    sign_in(webmail_client)
    client = app.test_client()
    as_json = client.post("/backchannel-logout", json={"logout_token": op.logout_token()})
    assert as_json.status_code == 400
    assert client.get("/backchannel-logout").status_code == 405
    assert session_state(webmail_client) == "signed_in"


def test_unreachable_keys_are_not_blamed_on_the_sender(op: FakeOP) -> None:
    # A webmail that cannot reach its OP cannot check any token.
    lonely = create_webmail_app(make_config(op, issuer="http://127.0.0.1:9"))
    response = lonely.test_client().post(
        "/backchannel-logout", data={"logout_token": op.logout_token()}
    )
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
