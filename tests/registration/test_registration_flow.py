"""One-time registration: the three steps, then card-only sign-in; carrying on to the RP
that sent the person; re-registration after a removal; nothing stored until confirmed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from broker_fixtures import BACKENDS
from broker_support import broker_of, csrf_token_from, error_code_of, form_of, step_from
from card_fixtures import CardAppFactory
from card_support import ALEX, CardBrowser, CardPki, audits, last_audit
from flask import Flask, Response, request_finished
from oidc_support import Browser, query_of
from sqlalchemy import select

from careid_broker.registration.state import REGISTRATION_CLIENT_ID
from careid_broker.store import AuditRecord, LinkMode, Outcome, StoreUnavailableError
from careid_broker.store.models import LoginTransaction
from support.clock import FakeClock


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_alex_registers_in_three_steps_and_is_signed_in_by_card(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    agent = card_pki.agent("alex")
    step1 = card_browser.register_password(ALEX[0])
    assert step1.status_code == 303 and step1.location == "/register/card"

    card_page = card_browser.client.get("/register/card")
    assert card_page.status_code == 200
    page = card_page.get_data(as_text=True)
    assert 'id="register-card-form"' in page and 'id="register-card-button"' in page
    assert 'data-challenge-url="/register/challenge"' in page
    assert (
        "connect-src 'self' http://127.0.0.1:47600" in card_page.headers["Content-Security-Policy"]
    )

    step2 = card_browser.register_card(agent)
    assert step2.status_code == 200, step2.get_data(as_text=True)
    assert step2.get_json() == {"redirect": "/register/confirm"}
    # Nothing is linked before the person confirms.
    assert broker_of(card_app).repos.registrations.by_uuid(ALEX[1]) is None

    confirm = card_browser.client.get("/register/confirm").get_data(as_text=True)
    assert re.search(r'id="confirm-holder-name">Alex Morgan<', confirm)
    assert re.search(r'id="confirm-uuid">555000000001<', confirm)
    assert re.search(r'id="confirm-account-name">Alex Morgan<', confirm)
    assert re.search(r'id="confirm-account-mail">alex.morgan@nhs.net<', confirm)
    assert 'id="confirm-replaces"' not in confirm

    done = card_browser.register_confirm()
    assert done.status_code == 200
    page = done.get_data(as_text=True)
    card_session = re.search(r'data-card-session="([^"]+)"', page)
    assert card_session is not None
    assert 'id="register-continue-link"' in page and 'href="/login"' in page

    repos = broker_of(card_app).repos
    record = repos.registrations.by_uuid(ALEX[1])
    assert record is not None and record.account_mail == ALEX[0]
    assert record.link_mode is LinkMode.UUID and record.org_code == "RX1"
    assert record.cert_serial == agent.serial_hex.lower()
    sessions = repos.sessions.active_for_account(ALEX[0])
    assert len(sessions) == 1 and sessions[0].acr == "AAL3_SMARTCARD"
    assert repos.sessions.find_by_card_session(card_session.group(1)) is not None
    events = {e.event: e for e in reversed(audits(card_app, "registration."))}
    assert set(events) == {"registration.start", "registration.card", "registration.create"}
    assert all(e.outcome is Outcome.SUCCESS for e in events.values())
    assert events["registration.create"].details["uuid"] == ALEX[1]

    # From now on the card alone signs in (a fresh browser).
    later = CardBrowser(card_app.test_client())
    later.open_login()
    assert later.sign_in(agent).status_code == 200


def test_a_registration_that_cannot_be_audited_is_not_stored(
    card_app: Flask,
    card_pki: CardPki,
    card_browser: CardBrowser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The link, its audit entry and the sign-in commit together: when the audit write
    # fails (the database went away mid-confirmation) none of them is kept.
    agent = card_pki.agent("alex")
    assert card_browser.register_password(ALEX[0]).status_code == 303
    assert card_browser.register_card(agent).status_code == 200
    audit_log = broker_of(card_app).repos.audit
    real_append = audit_log.append

    def failing_append(event: str, *args: object, **kwargs: object) -> AuditRecord:
        if event == "registration.create":
            raise StoreUnavailableError(detail="test: the database went away")
        return real_append(event, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_log, "append", failing_append)
    refused = card_browser.register_confirm()
    assert refused.status_code == 503 and error_code_of(refused) == "store_unavailable"
    monkeypatch.undo()
    repos = broker_of(card_app).repos
    assert repos.registrations.by_uuid(ALEX[1]) is None
    assert repos.sessions.active_for_account(ALEX[0]) == []
    # Nothing half done: the same confirmation goes through once the database is back.
    assert card_browser.register_confirm().status_code == 200
    assert repos.registrations.by_uuid(ALEX[1]) is not None


def test_registration_begun_from_an_rp_sign_in_carries_on_to_that_rp(
    card_app: Flask, card_pki: CardPki
) -> None:
    cookies: list[int] = []

    def measure(sender: Flask, response: Response, **_: object) -> None:
        cookies.extend(len(value) for value in response.headers.getlist("Set-Cookie"))

    request_finished.connect(measure, card_app)
    rp = Browser(card_app.test_client())
    authorization = rp.authorize()
    tx = query_of(authorization.location)["tx"]
    card = CardBrowser(rp.client)
    card.open_login(tx)
    refused = card.sign_in(card_pki.agent("alex"), tx)
    register_url = refused.get_json()["register"]
    assert register_url == f"/register?tx={tx}"

    start = rp.client.get(register_url).get_data(as_text=True)
    assert f'name="tx" value="{tx}"' in start
    done = card.register(card_pki.agent("alex"), ALEX[0], tx=tx)
    assert f'href="/authorize/resume?tx={tx}"' in done.get_data(as_text=True)
    resumed = rp.client.get(f"/authorize/resume?tx={tx}")
    assert resumed.status_code == 302 and resumed.location.startswith(rp.redirect_uri)
    # Browsers drop a cookie over 4096 bytes (and keep the old one). The browser cookie
    # holds ids and digests, never the certificate or a sealed request a step carries.
    assert cookies and max(cookies) < 1000, max(cookies)


def test_re_registration_after_an_administrator_removed_the_link(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    agent = card_pki.agent("alex")
    card_browser.register(agent, ALEX[0])
    removed = broker_of(card_app).repos.registrations.remove(card_uuid=ALEX[1])
    assert removed is not None
    again = CardBrowser(card_app.test_client())
    again.open_login()
    assert again.sign_in(agent).get_json()["error"] == "card_not_registered"
    again.register(agent, ALEX[0])
    assert broker_of(card_app).repos.registrations.by_mail(ALEX[0]) is not None


def test_cancelling_stores_nothing_and_starts_over(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    card_browser.register_card(card_pki.agent("alex"))
    page = card_browser.client.get("/register/confirm").get_data(as_text=True)
    cancelled = card_browser.client.post("/register/cancel", data=form_of(page))
    assert cancelled.status_code == 303 and cancelled.location == "/register"
    assert card_browser.client.get("/register").status_code == 200  # the first step again
    token = csrf_token_from(card_browser.client.get("/register").get_data(as_text=True))
    confirm = card_browser.client.post("/register/confirm", data={"csrf_token": token})
    assert confirm.status_code == 400 and error_code_of(confirm) == "registration_expired"
    assert broker_of(card_app).repos.registrations.by_uuid(ALEX[1]) is None
    assert last_audit(card_app, "registration.cancel").outcome is Outcome.SUCCESS


def test_a_registration_left_too_long_expires_and_stores_nothing(
    card_app_factory: CardAppFactory, card_pki: CardPki, card_clock: FakeClock
) -> None:
    app = card_app_factory(card={"registration_lifetime_seconds": 120})
    card_browser = CardBrowser(app.test_client())
    card_browser.register_password(ALEX[0])
    card_browser.register_card(card_pki.agent("alex"))
    page = card_browser.client.get("/register/confirm").get_data(as_text=True)
    card_clock.advance(timedelta(seconds=121))
    response = card_browser.client.post("/register/confirm", data=form_of(page))
    assert response.status_code == 400
    assert 'data-error-code="registration_expired"' in response.get_data(as_text=True)
    assert broker_of(app).repos.registrations.by_uuid(ALEX[1]) is None
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []


def test_the_steps_cannot_be_skipped(card_app: Flask, card_pki: CardPki) -> None:
    card_browser = CardBrowser(card_app.test_client())
    card_browser.open_login()
    assert error_code_of(card_browser.client.get("/register/card")) == "registration_expired"
    assert error_code_of(card_browser.client.get("/register/confirm")) == "registration_expired"
    challenge = card_browser.challenge(path="/register/challenge")
    assert challenge.get_json()["error"] == "registration_expired"
    card_browser.register_password(ALEX[0])
    # Step 2 not done: the confirmation page sends the person back to it.
    assert card_browser.client.get("/register/confirm").location == "/register/card"
    posted = card_browser.client.post(
        "/register/confirm", data={"csrf_token": card_browser.csrf or ""}
    )
    assert posted.status_code == 400 and error_code_of(posted) == "registration_expired"
    assert broker_of(card_app).repos.registrations.by_uuid(ALEX[1]) is None


def test_registration_and_sign_in_challenges_are_not_interchangeable(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    agent = card_pki.agent("alex")
    card_browser.register_password(ALEX[0])
    page = card_browser.client.get("/register/card").get_data(as_text=True)
    assert "register-card-form" in page
    card_browser.step = step_from(page)
    registration_challenge = card_browser.challenge(path="/register/challenge").get_json()[
        "challenge"
    ]
    signin_challenge = card_browser.challenge().get_json()["challenge"]
    wrong = card_browser.authenticate(agent.sign(registration_challenge), registration_challenge)
    assert wrong.get_json()["error"] == "challenge_wrong_transaction"
    crossed = card_browser.authenticate(
        agent.sign(signin_challenge), signin_challenge, path="/register/authenticate"
    )
    assert crossed.get_json()["error"] == "challenge_wrong_transaction"
    assert broker_of(card_app).repos.registrations.by_uuid(ALEX[1]) is None


def test_a_stale_confirmation_after_registering_elsewhere_changes_nothing(
    card_app: Flask, card_pki: CardPki
) -> None:
    # Alex gets to step 3 in one window, finishes in another, then presses Confirm in
    # the first: it is already done, so nothing is replaced and nobody is signed in.
    agent = card_pki.agent("alex")
    stale = CardBrowser(card_app.test_client())
    assert stale.register_password(ALEX[0]).status_code == 303
    assert stale.register_card(agent).status_code == 200
    other = CardBrowser(card_app.test_client())
    assert other.register(agent, ALEX[0]).status_code == 200
    repos = broker_of(card_app).repos
    record = repos.registrations.by_uuid(ALEX[1])
    assert record is not None
    sessions = repos.sessions.active_for_account(ALEX[0])

    answer = stale.register_confirm()
    assert answer.status_code == 409
    assert error_code_of(answer) == "registration_already_done"
    assert 'href="/login"' in answer.get_data(as_text=True)
    assert repos.registrations.by_uuid(ALEX[1]) == record
    assert repos.sessions.active_for_account(ALEX[0]) == sessions
    assert last_audit(card_app, "registration.create").error_code == "registration_already_done"


# When the session begins: the card's use at step 2, not the click on Confirm.


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_the_session_dates_from_the_card_not_the_confirmation(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser, card_clock: FakeClock
) -> None:
    assert card_browser.register_password(ALEX[0]).status_code == 303
    assert card_browser.register_card(card_pki.agent("alex")).status_code == 200
    card_used = card_clock()
    card_clock.advance(timedelta(minutes=14))  # the confirmation page left open
    assert card_browser.register_confirm().status_code == 200
    [signin] = broker_of(card_app).repos.sessions.active_for_account(ALEX[0])
    assert signin.auth_time == card_used and signin.created_at == card_clock()
    assert signin.amr == ("sc", "pin", "hwk")


def test_max_age_counts_from_the_card_not_the_confirmation(
    card_app: Flask, card_pki: CardPki, card_clock: FakeClock
) -> None:
    rp = Browser(card_app.test_client())
    authorization = rp.authorize(max_age="300")
    tx = query_of(authorization.location)["tx"]
    card = CardBrowser(rp.client)
    card.open_login(tx)
    agent = card_pki.agent("alex")
    assert card.sign_in(agent, tx).get_json()["error"] == "card_not_registered"
    assert card.register_password(ALEX[0], tx=tx).status_code == 303
    assert card.register_card(agent).status_code == 200
    card_clock.advance(timedelta(minutes=14))
    assert card.register_confirm().status_code == 200
    # The card was used fourteen minutes ago: the relying party asked for five at most.
    resumed = rp.client.get(f"/authorize/resume?tx={tx}")
    assert resumed.status_code == 302 and resumed.location.startswith("/login?"), resumed.location
    assert query_of(resumed.location)["tx"] == tx
    # The card, now registered, signs in again and the relying party gets its code.
    card.open_login(tx)
    again = card.sign_in(agent, tx)
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["redirect"].startswith(rp.redirect_uri)


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_a_step_stored_without_the_cards_time_dates_from_when_it_was_stored(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser, card_clock: FakeClock
) -> None:
    assert card_browser.register_password(ALEX[0]).status_code == 303
    assert card_browser.register_card(card_pki.agent("alex")).status_code == 200
    stored = card_clock()
    # As a broker before this one stored step 2 (a rolling upgrade): no time of use.
    with broker_of(card_app).store.transaction() as session:
        for row in session.scalars(
            select(LoginTransaction).where(LoginTransaction.client_id == REGISTRATION_CLIENT_ID)
        ):
            card = row.extras.get("card")
            if isinstance(card, dict):
                assert "used_at" in card
                row.extras = {
                    **row.extras,
                    "card": {k: v for k, v in card.items() if k != "used_at"},
                }
    card_clock.advance(timedelta(minutes=14))
    assert card_browser.register_confirm().status_code == 200
    [signin] = broker_of(card_app).repos.sessions.active_for_account(ALEX[0])
    assert signin.auth_time == stored
