"""The careid-auth:1 contract at the broker: challenges (single use, bound to one login
transaction and one browser, expiring), origin binding, token format, same-origin only."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from broker_fixtures import BACKENDS
from broker_support import broker_of, rp_transaction
from card_fixtures import CardAppFactory
from card_support import (
    ALEX,
    ISSUER,
    CardBrowser,
    CardPki,
    audits,
    last_audit,
    register_card,
)
from flask import Flask
from oidc_support import Browser, query_of
from sqlalchemy import event

from careid_broker.codes import BrokerCode
from careid_broker.store.engine import WRITE_OPTION
from support.clock import FakeClock


@pytest.fixture
def alex(card_app: Flask, card_pki: CardPki):
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    return agent


def _code(response) -> str:
    return response.get_json()["error"]


def test_a_challenge_is_43_base64url_characters_and_expires_in_five_minutes(
    card_browser: CardBrowser, card_clock: FakeClock
) -> None:
    card_browser.open_login()
    first = card_browser.challenge().get_json()
    second = card_browser.challenge().get_json()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first["challenge"])
    assert first["challenge"] != second["challenge"]
    expires = datetime.fromisoformat(first["expiresAt"].replace("Z", "+00:00"))
    assert first["expiresAt"].endswith("Z")
    assert abs((expires - card_clock.now) - timedelta(minutes=5)) < timedelta(seconds=2)


def test_the_challenge_lifetime_is_configurable(
    card_app_factory: CardAppFactory, card_clock: FakeClock
) -> None:
    card_browser = CardBrowser(
        card_app_factory(card={"challenge_lifetime_seconds": 60}).test_client()
    )
    card_browser.open_login()
    issued = card_browser.challenge().get_json()
    expires = datetime.fromisoformat(issued["expiresAt"].replace("Z", "+00:00"))
    assert abs((expires - card_clock.now) - timedelta(seconds=60)) < timedelta(seconds=2)


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_a_replayed_token_is_refused(card_app: Flask, card_browser: CardBrowser, alex) -> None:
    card_browser.open_login()
    challenge = card_browser.challenge().get_json()["challenge"]
    token = alex.sign(challenge)
    assert card_browser.authenticate(token, challenge).status_code == 200
    card_browser.open_login()  # signed in now: the page still hands out its token
    replay = card_browser.authenticate(token, challenge)
    assert replay.status_code == 400 and _code(replay) == "challenge_used"
    assert (
        len(broker_of(card_browser.client.application).repos.sessions.active_for_account(ALEX[0]))
        == 1
    )


def test_a_token_signed_for_another_origin_is_refused(
    card_app: Flask, card_browser: CardBrowser, alex
) -> None:
    card_browser.open_login()
    response = card_browser.sign_in(alex, origin="https://phishing.example")
    assert response.status_code == 400 and _code(response) == "signature_invalid"
    assert last_audit(card_app, "signin.card").error_code == "signature_invalid"


def test_a_challenge_from_another_login_transaction_is_refused_and_burned(
    card_app: Flask, alex
) -> None:
    rp = Browser(card_app.test_client())
    tx_a = query_of(rp.authorize().location)["tx"]
    tx_b = query_of(rp.authorize().location)["tx"]
    card_browser = CardBrowser(rp.client)
    card_browser.open_login(tx_a)
    card_browser.open_login(tx_b)
    challenge = card_browser.challenge(tx_a).get_json()["challenge"]
    token = alex.sign(challenge)
    wrong = card_browser.authenticate(token, challenge, tx_b)
    assert wrong.status_code == 400 and _code(wrong) == "challenge_wrong_transaction"
    # It left the window it was issued to: not usable there any more either.
    again = card_browser.authenticate(token, challenge, tx_a)
    assert _code(again) == "challenge_used"


def test_another_browser_cannot_use_a_transaction_or_its_challenge(card_app: Flask, alex) -> None:
    rp = Browser(card_app.test_client())
    tx = query_of(rp.authorize().location)["tx"]
    owner = CardBrowser(rp.client)
    owner.open_login(tx)
    challenge = owner.challenge(tx).get_json()["challenge"]

    other = CardBrowser(card_app.test_client())
    other.open_login()  # its own session and CSRF token, but never shown `tx`
    assert _code(other.challenge(tx)) == "challenge_wrong_transaction"
    stolen = other.authenticate(alex.sign(challenge), challenge, tx)
    assert stolen.status_code == 400 and _code(stolen) == "challenge_wrong_transaction"
    # The owner's challenge is still good: the other browser could not burn it.
    good = owner.authenticate(alex.sign(challenge), challenge, tx)
    assert good.status_code == 200, good.get_data(as_text=True)


@pytest.mark.parametrize("tx", ["\ud800", "t1.\udfff", 42, ["t1."]])
def test_a_transaction_id_no_browser_could_hold_is_refused_with_a_code(
    card_app: Flask, card_browser: CardBrowser, tx: object
) -> None:
    card_browser.open_login()
    for path, body in (
        ("/card/challenge", {"tx": tx}),
        ("/card/authenticate", {"tx": tx, "challenge": "c" * 43, "token": {}}),
    ):
        before = len(audits(card_app, "signin.card"))
        response = card_browser.post_json(path, body)
        assert response.status_code == 400, response.get_data(as_text=True)
        assert _code(response) == "challenge_wrong_transaction"
        assert len(audits(card_app, "signin.card")) == before + 1  # this refusal's own
        refusal = last_audit(card_app, "signin.card")
        assert refusal.outcome == "failure"
        assert refusal.error_code == "challenge_wrong_transaction"
        if path == "/card/challenge":
            assert refusal.details["endpoint"] == "card.challenge"


def test_a_local_challenge_cannot_be_used_from_another_browser(card_app: Flask, alex) -> None:
    owner = CardBrowser(card_app.test_client())
    owner.open_login()
    challenge = owner.challenge().get_json()["challenge"]
    other = CardBrowser(card_app.test_client())
    other.open_login()
    other.challenge()  # the other browser's own local transaction
    response = other.authenticate(alex.sign(challenge), challenge)
    assert _code(response) == "challenge_wrong_transaction"


def test_an_expired_challenge_is_refused(
    card_browser: CardBrowser, alex, card_clock: FakeClock
) -> None:
    card_browser.open_login()
    challenge = card_browser.challenge().get_json()["challenge"]
    card_clock.advance(timedelta(minutes=5, seconds=1))
    response = card_browser.authenticate(alex.sign(challenge), challenge)
    assert response.status_code == 400 and _code(response) == "challenge_expired"


def test_an_unknown_or_missing_challenge_is_refused(card_browser: CardBrowser, alex) -> None:
    card_browser.open_login()
    card_browser.challenge()
    made_up = base64.urlsafe_b64encode(b"\0" * 32).rstrip(b"=").decode()
    assert _code(card_browser.authenticate(alex.sign(made_up), made_up)) == "challenge_unknown"
    token = alex.sign(made_up)
    body = {"tx": None, "token": token}
    assert _code(card_browser.post_json("/card/authenticate", body)) == "challenge_unknown"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda t: {**t, "format": "careid-auth:2"}, "token_unsupported_format"),
        (lambda t: {**t, "algorithm": "HS256"}, "token_unsupported_algorithm"),
        (lambda t: {**t, "algorithm": "ES384"}, "token_unsupported_algorithm"),
        (lambda t: {**t, "extra": "field"}, "token_malformed"),
        (lambda t: {k: v for k, v in t.items() if k != "signature"}, "token_malformed"),
        (lambda t: {**t, "certificate": "not base64!"}, "token_malformed"),
        (
            lambda t: {**t, "certificate": base64.b64encode(b"junk").decode()},
            "certificate_malformed",
        ),
        (lambda t: {**t, "signature": base64.b64encode(b"\1" * 64).decode()}, "signature_invalid"),
    ],
)
def test_malformed_tokens_get_their_own_codes(
    card_browser: CardBrowser, alex, change, code
) -> None:
    card_browser.open_login()
    challenge = card_browser.challenge().get_json()["challenge"]
    response = card_browser.authenticate(change(alex.sign(challenge)), challenge)
    assert response.status_code in (400, 403) and _code(response) == code


def test_a_token_that_is_not_an_object_or_too_large_is_refused(
    card_browser: CardBrowser, alex
) -> None:
    card_browser.open_login()
    challenge = card_browser.challenge().get_json()["challenge"]
    assert _code(card_browser.post_json("/card/authenticate", {"challenge": challenge})) == (
        "token_malformed"
    )
    huge = {"tx": None, "challenge": challenge, "token": {"certificate": "A" * 40000}}
    response = card_browser.post_json("/card/authenticate", huge)
    assert response.status_code == 400 and _code(response) == "token_malformed"


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"not json", b"{"])
def test_a_challenge_request_that_is_no_json_object_is_refused_and_audited(
    card_app: Flask, card_browser: CardBrowser, body: bytes
) -> None:
    card_browser.open_login()
    before = len(audits(card_app, "signin.card"))
    response = card_browser.client.post(
        "/card/challenge",
        data=body,
        headers=card_browser.headers(**{"Content-Type": "application/json"}),
    )
    assert response.status_code == 400 and _code(response) == "request_invalid"
    assert len(audits(card_app, "signin.card")) == before + 1  # this refusal's own
    refusal = last_audit(card_app, "signin.card")
    assert refusal.outcome == "failure" and refusal.error_code == "request_invalid"
    assert refusal.details["endpoint"] == "card.challenge"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": ISSUER, "Sec-Fetch-Site": "same-site"},
        {},
    ],
)
def test_only_same_origin_script_calls_are_answered(
    card_app: Flask, card_browser: CardBrowser, headers: dict[str, str]
) -> None:
    card_browser.open_login()
    sent = {"X-CSRF-Token": card_browser.csrf or "", "Accept": "application/json", **headers}
    for path in ("/card/challenge", "/card/authenticate"):
        response = card_browser.client.post(path, json={"tx": None}, headers=sent)
        assert response.status_code == 403 and _code(response) == "request_not_same_origin"
    assert last_audit(card_app, "signin.card").error_code == "request_not_same_origin"


def test_the_csrf_token_is_required(card_browser: CardBrowser) -> None:
    card_browser.open_login()
    headers = card_browser.headers()
    del headers["X-CSRF-Token"]
    response = card_browser.client.post("/card/challenge", json={"tx": None}, headers=headers)
    assert response.status_code == 400 and _code(response) == "csrf_invalid"


def test_a_finished_login_transaction_gets_no_challenge(card_app: Flask, alex) -> None:
    rp = Browser(card_app.test_client())
    tx = query_of(rp.authorize().location)["tx"]
    card_browser = CardBrowser(rp.client)
    card_browser.open_login(tx)
    broker_of(card_app).repos.transactions.expire(tx)
    response = card_browser.challenge(tx)
    assert response.status_code == 400 and _code(response) == BrokerCode.OIDC_SIGNIN_EXPIRED


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_a_challenge_reads_its_transactions_state_once_in_its_own_write(
    card_app: Flask, card_browser: CardBrowser, card_clock: FakeClock
) -> None:
    # The state of an RP's login transaction is read in the write that stores the
    # challenge, not also in a read before it (the throughput issue: nothing read twice).
    repos = broker_of(card_app).repos
    tx = rp_transaction(card_app, card_browser.client)
    card_browser.open_login(tx)
    begun = _begins(card_app)
    assert card_browser.challenge(tx).status_code == 200
    assert begun == {"read": 0, "write": 1}
    # A completed transaction gets no challenge, though its id alone looks pending.
    assert repos.transactions.complete(tx) is not None
    refused = card_browser.challenge(tx)
    assert refused.status_code == 400 and _code(refused) == "oidc_signin_expired"
    # Nor does one past its time.
    later = rp_transaction(card_app, card_browser.client)
    card_clock.advance(timedelta(minutes=16))
    refused = card_browser.challenge(later)
    assert refused.status_code == 400 and _code(refused) == "oidc_signin_expired"


def _begins(app: Flask) -> dict[str, int]:
    """Transactions begun on the app's database from now on, by kind (live counts)."""
    store = broker_of(app).store
    counted = {"read": 0, "write": 0}

    def begun(conn: Any) -> None:
        counted["write" if conn.get_execution_options().get(WRITE_OPTION) else "read"] += 1

    for engine in {store.engine, store.read_engine}:
        event.listen(engine, "begin", begun)
    return counted
