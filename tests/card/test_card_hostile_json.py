"""Hostile JSON at every JSON endpoint of card sign-in and registration: a 4xx with a code,
never a 5xx or a traceback, and refusals audited."""

from __future__ import annotations

import json
import logging

import pytest
from card_support import ALEX, CardBrowser, last_audit
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEEP = b"[" * 5000 + b"]" * 5000  # ten kilobytes that made the handlers recurse to death


def _post(card_browser: CardBrowser, path: str, body: bytes, *, script: bool = True):
    headers = (
        card_browser.headers(**{"Content-Type": "application/json"})
        if script
        else {"Content-Type": "application/json"}
    )
    return card_browser.client.post(path, data=body, headers=headers)


@pytest.mark.parametrize(
    ("path", "event", "code"),
    [
        ("/card/challenge", "signin.card", "request_invalid"),
        # The contract's own code for a token message that cannot be one.
        ("/card/authenticate", "signin.card", "token_malformed"),
        ("/card/removed", "card.removed", "request_invalid"),
        ("/register/authenticate", "registration.card", "request_invalid"),
    ],
)
def test_deeply_nested_json_is_400_with_a_code_and_audited(
    card_app: Flask,
    card_browser: CardBrowser,
    caplog: pytest.LogCaptureFixture,
    path: str,
    event: str,
    code: str,
) -> None:
    if path.startswith("/register/"):
        assert card_browser.register_password(ALEX[0]).status_code == 303
        card_browser.open_card_step()
    else:
        card_browser.open_login()
    with caplog.at_level(logging.WARNING):
        response = _post(card_browser, path, DEEP, script=path != "/card/removed")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == code
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    entry = last_audit(card_app, event)
    assert entry.error_code == code


def test_a_large_card_removed_body_is_refused(card_app: Flask, card_browser: CardBrowser) -> None:
    body = json.dumps({"cardSession": "x" * 43, "padding": "y" * 2000}).encode()
    response = _post(card_browser, "/card/removed", body, script=False)
    assert response.status_code == 400 and response.get_json()["error"] == "request_invalid"


BODIES = st.one_of(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=40,
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=300),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(["/card/challenge", "/card/authenticate", "/card/removed"]), body=BODIES
)
def test_any_body_gets_a_coded_4xx_or_success_never_a_5xx(
    card_app: Flask, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    browser = CardBrowser(card_app.test_client())
    browser.open_login()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = _post(browser, path, body, script=path != "/card/removed")
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert isinstance(response.get_json()["error"], str)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "challenge",
    [
        "A" * 42 + "\ud800",  # a lone surrogate: no UTF-8 form to hash
        "é" * 43,  # the right length, not base64url
        "A" * 42 + "=",
    ],
)
@pytest.mark.parametrize(
    ("path", "event"),
    [("/card/authenticate", "signin.card"), ("/register/authenticate", "registration.card")],
)
def test_a_challenge_the_broker_never_issues_is_refused_with_a_code_and_audited(
    card_app: Flask,
    card_browser: CardBrowser,
    card_pki,
    caplog: pytest.LogCaptureFixture,
    path: str,
    event: str,
    challenge: str,
) -> None:
    if path.startswith("/register/"):
        assert card_browser.register_password(ALEX[0]).status_code == 303
        card_browser.open_card_step()
        issued = card_browser.challenge(path="/register/challenge").get_json()["challenge"]
    else:
        card_browser.open_login()
        issued = card_browser.challenge().get_json()["challenge"]
    token = card_pki.agent("alex").sign(issued)  # well formed: only the challenge is wrong
    with caplog.at_level(logging.WARNING):
        response = card_browser.authenticate(token, challenge, path=path)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "challenge_unknown"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert last_audit(card_app, event).error_code == "challenge_unknown"
