"""A card's certificate with a few bytes changed, at sign-in and registration: always a
refusal with a code and an audit entry (or, for a change that alters nothing, a sign-in),
never a 5xx. cryptography finds much of the damage only when a field is first read, and
raises more than ValueError for it."""

from __future__ import annotations

import logging

import pytest
from card_support import ALEX, CardBrowser, CardPki, SimulatedAgent, audits
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careid_broker.codes import BrokerCode
from careid_protocol.errors import ErrorCode

# Changed bytes: where (a fraction of the length, so any certificate size fits) and what.
CHANGES = st.lists(
    st.tuples(st.floats(min_value=0, max_value=1, exclude_max=True), st.integers(0, 255)),
    min_size=1,
    max_size=3,
)
CERTIFICATE_CODES = {
    code.value for code in ErrorCode if code.value.startswith(("certificate_", "identity_"))
} | {
    ErrorCode.SIGNATURE_INVALID.value,
    ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM.value,
    BrokerCode.CARD_NOT_REGISTERED.value,  # a change that changed nothing
}


def _changed(der: bytes, changes: list[tuple[float, int]]) -> bytes:
    damaged = bytearray(der)
    for where, value in changes:
        damaged[int(where * len(der))] = value
    return bytes(damaged)


@pytest.fixture
def alex(card_pki: CardPki) -> SimulatedAgent:
    # Not card_pki itself in the test's arguments: hypothesis prints them, PEMs and all.
    return card_pki.agent("alex")


def _at_step_two(app: Flask) -> CardBrowser:
    """A new browser at registration step 2 for Alex."""
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    browser.open_card_step()
    return browser


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=CHANGES, registration=st.booleans())
def test_a_changed_certificate_is_refused_with_a_code_never_a_5xx(
    card_app: Flask,
    alex: SimulatedAgent,
    caplog: pytest.LogCaptureFixture,
    changes: list[tuple[float, int]],
    registration: bool,
) -> None:
    if registration:
        browser, prefix, event = _at_step_two(card_app), "/register", "registration.card"
    else:
        browser, prefix, event = CardBrowser(card_app.test_client()), "/card", "signin.card"
        browser.open_login()
    issued = browser.challenge(path=f"{prefix}/challenge")
    assert issued.status_code == 200, issued.get_data(as_text=True)
    challenge = issued.get_json()["challenge"]
    token = alex.sign(challenge, certificate=_changed(alex.certificate_der, changes))
    before = len(audits(card_app, event))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = browser.authenticate(token, challenge, path=f"{prefix}/authenticate")
    assert response.status_code < 500, response.get_data(as_text=True)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    if response.status_code >= 400:
        assert response.get_json()["error"] in CERTIFICATE_CODES
    assert len(audits(card_app, event)) == before + 1
