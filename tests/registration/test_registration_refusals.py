"""Registration refusals: each missing prerequisite named, the AUP accepted where the
directory allows, bad cards and identities at step 2, conflicts at steps 2 and 3 — and
none of them leaves a link behind."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from broker_support import (
    DEMO_PASSWORD,
    broker_of,
    browser_csrf,
    csrf_token_from,
    error_code_of,
    form_of,
)
from card_fixtures import CardAppFactory
from card_support import (
    ALEX,
    CHRIS,
    JO,
    KIM,
    PAT,
    SAM,
    UNKNOWN_UUID,
    CardBrowser,
    CardPki,
    SimulatedAgent,
    audits,
    last_audit,
    register_card,
)
from flask import Flask
from flask.testing import FlaskClient
from ldap3 import MODIFY_DELETE, MODIFY_REPLACE, Connection
from werkzeug.test import TestResponse

from careid_broker.codes import AupRoute, aup_message
from careid_broker.store import LinkMode, NewRegistration, Outcome
from careid_devkit.slapd import Slapd
from support.clock import FakeClock
from support.damaged_certificates import unreadable_name, with_version
from support.directory_entries import give_address_to_new_entry
from support.directory_writes import stop_once_written


def _problems(page: str) -> list[str]:
    return re.findall(r'<li id="problem-[a-z_]+" data-error-code="([a-z_]+)"', page)


def _aup_writer(slapd: Slapd) -> dict[str, object]:
    """`[directory]` overrides: the broker records AUP acceptance in this slapd."""
    return {
        "writable": True,
        "write_bind_dn": slapd.aup_writer_bind_dn,
        "write_bind_password": slapd.aup_writer_password,
    }


def _nothing_stored(app: Flask, mail: str, uuid: str) -> None:
    repos = broker_of(app).repos
    assert repos.registrations.by_mail(mail) is None and repos.registrations.by_uuid(uuid) is None


def test_a_wrong_password_is_said_plainly_and_nothing_starts(
    card_app: Flask, card_browser: CardBrowser
) -> None:
    response = card_browser.register_password(ALEX[0], "not-the-password")
    assert response.status_code == 400
    assert error_code_of(response) == "invalid_credentials"
    assert card_browser.client.get("/register").status_code == 200  # still step 1
    assert last_audit(card_app, "registration.start").outcome is Outcome.FAILURE


@pytest.mark.parametrize(
    ("person", "missing"),
    [
        (SAM, ["aup_not_accepted"]),
        (CHRIS, ["aup_not_accepted"]),
        (JO, ["account_disabled"]),
        # The Care Identity is looked up at step 1: no card and PIN before saying so.
        (PAT, ["care_identity_inactive"]),
    ],
)
def test_each_missing_prerequisite_is_named(
    card_app: Flask, card_browser: CardBrowser, person: tuple[str, str, str], missing: list[str]
) -> None:
    assert card_browser.register_password(person[0]).status_code == 303
    page = card_browser.client.get("/register/card")
    assert page.status_code == 403
    text = page.get_data(as_text=True)
    assert _problems(text) == missing
    assert 'data-error-code="registration_prerequisites_missing"' in text
    if "aup_not_accepted" in missing:
        # The demo directory is read-only: a link to where the policy is accepted.
        assert 'id="register-aup-link"' in text and 'id="register-aup-form"' not in text
    challenge = card_browser.challenge(path="/register/challenge")
    assert challenge.get_json()["error"] == "registration_prerequisites_missing"
    entry = last_audit(card_app, "registration.start")
    assert entry.outcome is Outcome.FAILURE and entry.details["missing"] == missing


def test_the_aup_can_be_accepted_when_the_directory_is_writable(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd, directory=_aup_writer(own_slapd))
    card_browser = CardBrowser(app.test_client())
    card_browser.register_password(SAM[0])
    page = card_browser.client.get("/register/card").get_data(as_text=True)
    assert 'id="register-aup-form"' in page and 'id="register-aup-button"' in page
    accepted = card_browser.client.post("/register/aup", data=form_of(page, accept="yes"))
    assert accepted.status_code == 303 and accepted.location == "/register/card"
    assert card_browser.client.get("/register/card").status_code == 200  # step 2 now
    account = broker_of(app).directory.find_account(SAM[0])
    assert account is not None and account.aup_version == "2024-1"
    entry = last_audit(app, "registration.aup")
    assert entry.outcome is Outcome.SUCCESS
    assert entry.details["dn"] == "uid=sam.patel,ou=people,dc=nhs,dc=example"
    card_browser.register_card(card_pki.agent("sam"))
    assert card_browser.register_confirm().status_code == 200


def test_the_aup_is_not_accepted_on_an_entry_given_the_address_after_the_password_step(
    card_app_factory: CardAppFactory, own_slapd: Slapd
) -> None:
    # Sam's password opened the registration; before Sam accepts the policy, Sam's
    # address is given to a new directory entry (another person). The acceptance must
    # not be recorded on that person's entry, as the stand-alone AUP step refuses it.
    app = card_app_factory(directory_slapd=own_slapd, directory=_aup_writer(own_slapd))
    card_browser = CardBrowser(app.test_client())
    assert card_browser.register_password(SAM[0]).status_code == 303
    page = card_browser.client.get("/register/card").get_data(as_text=True)
    assert 'id="register-aup-form"' in page
    new_dn = give_address_to_new_entry(own_slapd, "sam.patel", "sam.patel.new")

    refused = card_browser.client.post("/register/aup", data=form_of(page, accept="yes"))
    assert error_code_of(refused) == "registration_expired"
    now = broker_of(app).directory.find_account(SAM[0])
    assert now is not None and now.dn == new_dn and now.aup_version is None
    entry = last_audit(app, "registration.aup")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "registration_expired"
    assert entry.subject == SAM[0]
    assert entry.details["dn"] == "uid=sam.patel,ou=people,dc=nhs,dc=example"
    # The step is gone: the registration starts again, with the new holder's password.
    again = card_browser.client.get("/register/card")
    assert error_code_of(again) == "registration_expired"


def test_a_confirmation_after_the_address_went_to_another_entry_links_nothing(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd)
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    assert browser.register_card(card_pki.agent("alex")).status_code == 200
    page = browser.client.get("/register/confirm").get_data(as_text=True)
    # The new entry names Alex's Care Identity too: only the entry tells them apart.
    give_address_to_new_entry(own_slapd, "alex.morgan", "alex.morgan.new", care_identity=ALEX[1])
    refused = browser.client.post("/register/confirm", data=form_of(page))
    assert error_code_of(refused) == "registration_expired"
    _nothing_stored(app, ALEX[0], ALEX[1])
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    entry = last_audit(app, "registration.create")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "registration_expired"
    assert entry.details["dn"] == "uid=alex.morgan,ou=people,dc=nhs,dc=example"


def test_an_acceptance_the_directory_recorded_is_audited_even_if_it_cannot_be_read_back(
    card_app_factory: CardAppFactory, own_slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = card_app_factory(directory_slapd=own_slapd, directory=_aup_writer(own_slapd))
    card_browser = CardBrowser(app.test_client())
    card_browser.register_password(SAM[0])
    page = card_browser.client.get("/register/card").get_data(as_text=True)
    stop_once_written(broker_of(app).directory, own_slapd, monkeypatch)
    stopped = card_browser.client.post("/register/aup", data=form_of(page, accept="yes"))
    assert stopped.status_code == 503 and error_code_of(stopped) == "directory_unavailable"
    entries = audits(app, "registration.aup")
    made = [e for e in entries if e.outcome is Outcome.SUCCESS]
    stopped_there = [e for e in entries if e.outcome is Outcome.FAILURE]
    assert len(made) == 1 and len(stopped_there) == 1
    assert made[0].actor == SAM[0] and made[0].details["aup_version"] == "2024-1"
    assert stopped_there[0].error_code == "directory_unavailable"
    assert stopped_there[0].details["aup_recorded"] == "2024-1"
    own_slapd.start()
    # The registration goes on at step 2: nothing is missing any more.
    assert card_browser.client.get("/register/card").status_code == 200


@pytest.mark.parametrize(
    ("card", "code"),
    [
        ("unknown", "care_identity_not_found"),
        ("alex_revoked", "certificate_revoked"),
        ("alex_expired", "certificate_expired"),
        ("alex_untrusted", "certificate_untrusted"),
    ],
)
def test_step_two_refuses_cards_that_cannot_be_registered(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser, card: str, code: str
) -> None:
    card_browser.register_password(ALEX[0])
    response = card_browser.register_card(card_pki.agent(card))
    assert response.status_code in (403, 503), response.get_data(as_text=True)
    assert response.get_json()["error"] == code
    entry = last_audit(card_app, "registration.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == code
    assert entry.details["cert_serial"] == card_pki.agent(card).serial_hex
    _nothing_stored(card_app, ALEX[0], ALEX[1])
    # Still at step 2: the person can try again with the right card.
    assert card_browser.client.get("/register/card").status_code in (200, 403)


@pytest.mark.parametrize(
    "damage",
    [
        lambda der: unreadable_name(der, "issuer"),
        lambda der: unreadable_name(der, "subject"),
        lambda der: with_version(der, 3),
    ],
    ids=["issuer", "subject", "version"],
)
def test_step_two_refuses_a_certificate_the_broker_cannot_fully_read(
    card_app: Flask,
    card_pki: CardPki,
    card_browser: CardBrowser,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
) -> None:
    agent = card_pki.agent("alex")
    assert card_browser.register_password(ALEX[0]).status_code == 303
    card_browser.open_card_step()
    challenge = card_browser.challenge(path="/register/challenge").get_json()["challenge"]
    token = agent.sign(challenge, certificate=damage(agent.certificate_der))
    with caplog.at_level(logging.WARNING):
        response = card_browser.authenticate(token, challenge, path="/register/authenticate")
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["error"] == "certificate_malformed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    entry = last_audit(card_app, "registration.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "certificate_malformed"
    _nothing_stored(card_app, ALEX[0], ALEX[1])


def test_someone_else_s_card_does_not_register_to_this_account(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    response = card_browser.register_card(card_pki.agent("lee"))
    assert response.get_json()["error"] == "card_identity_mismatch"
    _nothing_stored(card_app, ALEX[0], "555000000004")


def _name_no_care_identity(slapd: Slapd, uid: str) -> None:
    admin = Connection(slapd.url, slapd.root_dn, slapd.root_password, auto_bind=True)
    try:
        assert admin.modify(
            f"uid={uid},ou=people,dc=nhs,dc=example",
            {"careidCareIdentityUuid": [(MODIFY_DELETE, [])]},
        )
    finally:
        admin.unbind()


@pytest.fixture
def naming_none(card_app_factory: CardAppFactory, own_slapd: Slapd) -> Flask:
    """A broker whose directory names no Care Identity for Alex's account."""
    _name_no_care_identity(own_slapd, "alex.morgan")
    return card_app_factory(directory_slapd=own_slapd)


def test_a_card_the_directory_gives_to_someone_else_does_not_register_to_an_account_naming_none(
    naming_none: Flask, card_pki: CardPki
) -> None:
    # Alex's account names no Care Identity in this directory; Lee's card is Lee's there.
    app = naming_none
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    refused = browser.register_card(card_pki.agent("lee"))
    assert refused.status_code == 403 and refused.get_json()["error"] == "card_identity_mismatch"
    _nothing_stored(app, ALEX[0], "555000000004")
    assert last_audit(app, "registration.card").error_code == "card_identity_mismatch"
    # Alex's own card, which the directory gives to nobody else, still registers; with
    # nothing in the directory to say the card is Alex's, the confirmation asks for the
    # password again (someone coming to a registration left open on a shared
    # workstation cannot link their own card to the account).
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    assert browser.register_card(card_pki.agent("alex")).status_code == 200
    page = browser.client.get("/register/confirm").get_data(as_text=True)
    assert 'id="password"' in page
    for typed, reason in (("", "invalid_credentials"), ("not-the-password", "invalid_credentials")):
        refused = browser.client.post("/register/confirm", data=form_of(page, password=typed))
        assert refused.status_code == 400
        text = refused.get_data(as_text=True)
        assert 'data-error-code="invalid_credentials"' in text and 'id="password"' in text
        _nothing_stored(app, ALEX[0], ALEX[1])
        entry = last_audit(app, "registration.create")
        assert entry.outcome is Outcome.FAILURE and entry.error_code == reason
        page = text  # a form is good for one submission: the refusal's own form next
    done = browser.client.post("/register/confirm", data=form_of(page, password=DEMO_PASSWORD))
    assert done.status_code in (200, 303), done.get_data(as_text=True)
    registration = broker_of(app).repos.registrations.by_mail(ALEX[0])
    assert registration is not None and registration.card_uuid == ALEX[1]


def test_a_card_linked_to_another_account_is_a_conflict_for_an_administrator(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    register_card(card_app, card_pki.agent("alex"), "someone.else@nhs.net")
    card_browser.register_password(ALEX[0])
    response = card_browser.register_card(card_pki.agent("alex"))
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "registration_card_linked" and "local administrator" in body["message"]
    assert broker_of(card_app).repos.registrations.by_mail(ALEX[0]) is None


def test_an_account_linked_to_another_card_is_a_conflict_for_an_administrator(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    broker_of(card_app).repos.registrations.create(
        NewRegistration(
            card_uuid=UNKNOWN_UUID,
            account_mail=ALEX[0],
            account_dn="uid=alex.morgan,ou=people,dc=nhs,dc=example",
            org_code="RX1",
            link_mode=LinkMode.UUID,
            cert_issuer_dn="CN=Some CA",
            cert_serial="01",
            cert_fingerprint="00" * 32,
        )
    )
    card_browser.register_password(ALEX[0])
    response = card_browser.register_card(card_pki.agent("alex"))
    assert response.status_code == 409
    assert response.get_json()["error"] == "registration_account_linked"
    assert broker_of(card_app).repos.registrations.by_uuid(ALEX[1]) is None


def test_a_conflict_that_appears_before_confirmation_stores_nothing_and_is_audited(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    assert card_browser.register_card(card_pki.agent("alex")).status_code == 200
    page = card_browser.client.get("/register/confirm").get_data(as_text=True)
    # Another instance (or an administrator) links the card meanwhile.
    register_card(card_app, card_pki.agent("alex"), "someone.else@nhs.net")
    response = card_browser.client.post("/register/confirm", data=form_of(page))
    assert response.status_code == 409
    text = response.get_data(as_text=True)
    assert 'data-error-code="registration_card_linked"' in text
    assert "local administrator" in text
    assert broker_of(card_app).repos.registrations.by_mail(ALEX[0]) is None
    assert broker_of(card_app).repos.sessions.active_for_account(ALEX[0]) == []
    entry = last_audit(card_app, "registration.create")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "registration_card_linked"
    assert entry.details["uuid"] == ALEX[1]


def test_registration_needs_the_same_origin_for_its_script_calls(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    card_browser.client.get("/register/card")
    headers = card_browser.headers(Origin="https://evil.example")
    for path in ("/register/challenge", "/register/authenticate"):
        response = card_browser.client.post(path, json={}, headers=headers)
        assert response.status_code == 403
        assert response.get_json()["error"] == "request_not_same_origin"


def test_every_refusal_of_the_script_calls_is_audited(
    card_app: Flask, card_browser: CardBrowser
) -> None:
    def refused(path: str, expected: str, **kwargs: object) -> None:
        before = len(audits(card_app, "registration.card"))
        response = card_browser.client.post(path, headers=card_browser.headers(), **kwargs)
        assert response.get_json()["error"] == expected, response.get_data(as_text=True)
        entries = audits(card_app, "registration.card")
        assert len(entries) == before + 1
        assert entries[0].outcome is Outcome.FAILURE and entries[0].error_code == expected
        assert entries[0].details["endpoint"] == path.replace("/register/", "registration.")

    # Sam has never accepted the AUP: no challenge for his registration yet.
    card_browser.register_password(SAM[0])
    card_browser.open_card_step()
    refused("/register/challenge", "registration_prerequisites_missing", json={})
    refused("/register/authenticate", "token_malformed", data="not json")
    # No registration under way in this browser any more.
    with card_browser.client.session_transaction() as browser_session:
        browser_session.pop("careid_register")
    refused("/register/challenge", "registration_expired", json={})


@pytest.mark.parametrize("writable", [False, True])
def test_the_aup_step_says_one_thing_for_this_directory(
    card_app_factory: CardAppFactory, card_pki: CardPki, writable: bool
) -> None:
    app = card_app_factory(directory={"writable": True} if writable else {})
    card_browser = CardBrowser(app.test_client())
    card_browser.register_password(SAM[0])
    response = card_browser.client.get("/register/card")
    assert response.status_code == 403
    page = html.unescape(response.get_data(as_text=True))
    assert _problems(page) == ["aup_not_accepted"]
    problem = re.search(r'<li id="problem-aup_not_accepted"[^>]*>([^<]*)</li>', page)
    assert problem is not None
    if writable:
        # The checkbox accepts it here: nothing on the page sends them to the portal.
        assert problem.group(1) == aup_message(AupRoute.HERE)
        assert 'id="register-aup-form"' in page and "NHSmail portal" not in page
        accepted = card_browser.client.post("/register/aup", data=form_of(page, accept="yes"))
        assert accepted.status_code == 303
        account = broker_of(app).directory.find_account(SAM[0])
        assert account is not None and account.aup_version == "2024-1"
        entry = last_audit(app, "registration.aup")
        assert entry.outcome is Outcome.SUCCESS and entry.actor == SAM[0]
    else:
        assert problem.group(1) == aup_message(AupRoute.PORTAL)
        assert 'id="register-aup-form"' not in page and "I accept" not in page
        assert "in the NHSmail portal" in page


def test_a_policy_that_changes_during_registration_is_accepted_there_and_said_so(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd, directory=_aup_writer(own_slapd))
    card_browser = CardBrowser(app.test_client())
    card_browser.register_password(ALEX[0])
    assert card_browser.open_card_step().status_code == 200
    challenge = card_browser.challenge(path="/register/challenge").get_json()["challenge"]
    # The policy moves on while the PIN is being typed (here: the accepted version is
    # set back, as a new policy version would leave it).
    admin = Connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password, auto_bind=True)
    try:
        assert admin.modify(
            "uid=alex.morgan,ou=people,dc=nhs,dc=example",
            {"careidAupAcceptedVersion": [(MODIFY_REPLACE, ["2023-1"])]},
        )
    finally:
        admin.unbind()
    agent = card_pki.agent("alex")
    refused = card_browser.authenticate(
        agent.sign(challenge), challenge, path="/register/authenticate"
    )
    assert refused.status_code == 403
    body = refused.get_json()
    assert body["error"] == "aup_not_accepted"
    # Worded for registering, not for signing in, and sent to the page that accepts it.
    assert body["message"] == aup_message(AupRoute.REGISTRATION)
    assert "sign in" not in body["message"]
    assert body["aup"] == "/register/card"
    page = card_browser.client.get("/register/card")
    assert page.status_code == 403 and 'id="register-aup-form"' in page.get_data(as_text=True)
    accepted = card_browser.client.post(
        "/register/aup",
        data=form_of(page.get_data(as_text=True), accept="yes"),
    )
    assert accepted.status_code == 303
    assert card_browser.register_card(agent).status_code == 200
    assert card_browser.register_confirm().status_code == 200
    linked = broker_of(app).repos.registrations.by_mail(ALEX[0])
    assert linked is not None and linked.card_uuid == ALEX[1]


def test_a_card_revoked_before_confirmation_is_not_linked_and_signs_nobody_in(
    card_app_factory: CardAppFactory, card_pki: CardPki, card_clock: FakeClock
) -> None:
    agent = SimulatedAgent(card_pki.issue("alex_lost_at_confirm", ALEX[1], ALEX[2]))
    app = card_app_factory(pki=card_pki.pki_settings(ocsp={"max_good_age_seconds": 60}))
    browser = CardBrowser(app.test_client())
    browser.register_password(ALEX[0])
    assert browser.register_card(agent).status_code == 200
    page = browser.client.get("/register/confirm").get_data(as_text=True)
    # The card is reported lost while the page waits for the confirmation; the
    # answer the broker had about it is out of date by then.
    card_pki.pki.revoke(
        uuid=ALEX[1],
        serial=agent.certificate.serial_number,
        reason="keyCompromise",
        now=card_clock.now,
    )
    card_clock.advance(timedelta(minutes=2))
    response = browser.client.post("/register/confirm", data=form_of(page))
    assert response.status_code == 403
    assert 'data-error-code="certificate_revoked"' in response.get_data(as_text=True)
    _nothing_stored(app, ALEX[0], ALEX[1])
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    entry = last_audit(app, "registration.create")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "certificate_revoked"
    assert entry.details["uuid"] == ALEX[1]
    assert entry.details["cert_serial"] == agent.serial_hex


def test_a_registration_left_open_ends_with_a_sign_out_or_another_sign_in(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    client = card_browser.client

    def resumes() -> bool:
        return client.get("/register/card").status_code == 200

    assert card_browser.register_password(ALEX[0]).status_code == 303
    assert resumes()
    page = client.get("/login").get_data(as_text=True)
    assert client.post("/signout", data={"csrf_token": csrf_token_from(page)}).status_code == 200
    assert not resumes()
    # Begun again and left at the card step; the next person signs in with their card.
    assert card_browser.register_password(ALEX[0]).status_code == 303
    assert resumes()
    register_card(card_app, card_pki.agent("lee"), "lee.admin@nhs.net")
    card_browser.open_login()
    assert card_browser.sign_in(card_pki.agent("lee")).status_code == 200
    assert not resumes()


def test_guessing_the_password_at_the_confirmation_is_throttled(
    naming_none: Flask, card_pki: CardPki
) -> None:
    app = naming_none
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    assert browser.register_card(card_pki.agent("alex")).status_code == 200
    page = browser.client.get("/register/confirm").get_data(as_text=True)
    answers = []
    for _ in range(8):
        answer = browser.client.post(
            "/register/confirm", data=form_of(page, password="not-the-password")
        )
        answers.append(answer)
        if answer.status_code != 400:
            break
        page = answer.get_data(as_text=True)  # the password asked again, on its own form
    throttled = [a for a in answers if a.status_code == 429]
    assert throttled, [a.status_code for a in answers]
    assert int(throttled[0].headers["Retry-After"]) > 0
    assert error_code_of(throttled[0]) == "signin_throttled"
    _nothing_stored(app, ALEX[0], ALEX[1])


def test_a_confirmation_after_the_directory_relinks_the_account_links_nothing(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    # Between step 2 and the confirmation the directory records another Care Identity
    # on Alex's account: the card is no longer the one the directory names for it.
    app = card_app_factory(directory_slapd=own_slapd)
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    assert browser.register_card(card_pki.agent("alex")).status_code == 200
    admin = Connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password, auto_bind=True)
    try:
        assert admin.modify(
            "uid=alex.morgan,ou=people,dc=nhs,dc=example",
            {"careidCareIdentityUuid": [(MODIFY_REPLACE, ["555000000005"])]},
        )
    finally:
        admin.unbind()
    refused = browser.register_confirm()
    assert refused.status_code == 403 and error_code_of(refused) == "card_identity_mismatch"
    _nothing_stored(app, ALEX[0], ALEX[1])
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    entry = last_audit(app, "registration.create")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "card_identity_mismatch"


def _begin_in_a_tab_opened_earlier(client: FlaskClient, tab: str, mail: str) -> TestResponse:
    """Step 1 from a page opened before another password was sent in this browser: its
    form is spent, shown again with the address kept; the password typed again."""
    expired = client.post("/register", data=form_of(tab, email=mail, password=DEMO_PASSWORD))
    assert expired.status_code == 400 and error_code_of(expired) == "csrf_invalid"
    again = form_of(expired.get_data(as_text=True), email=mail, password=DEMO_PASSWORD)
    return client.post("/register", data=again)


def test_forms_from_a_page_for_another_persons_step_do_nothing(
    card_app: Flask, card_pki: CardPki
) -> None:
    # One browser, two tabs at a shared workstation: Alex reaches the confirmation, then
    # Kim registers in another tab and walks off at hers. Alex's page names Alex.
    client = card_app.test_client()
    second_tab = client.get("/register").get_data(as_text=True)  # opened before Alex began
    alex = CardBrowser(client)
    assert alex.register_password(ALEX[0]).status_code == 303
    assert alex.register_card(card_pki.agent("alex")).status_code == 200
    alex_page = client.get("/register/confirm").get_data(as_text=True)
    assert ALEX[0] in alex_page
    kim = CardBrowser(client)
    started = _begin_in_a_tab_opened_earlier(client, second_tab, KIM[0])
    assert started.status_code == 303
    # Kim's password spent the token Alex's pages hold: their forms and script are
    # refused for that first. Each also names Alex's step, which refuses them even were
    # their token current (below, the browser's token now).
    assert error_code_of(alex.challenge(path="/register/challenge")) == "csrf_invalid"
    alex.csrf = browser_csrf(client)
    # The card page's script names its step too: Alex's step-2 page, left open, presents
    # a card while this browser holds Kim's step. Refused, and Kim's step is untouched.
    issued = alex.challenge(path="/register/challenge").get_json()["challenge"]
    crossed = alex.authenticate(
        card_pki.agent("alex").sign(issued), issued, path="/register/authenticate"
    )
    assert crossed.status_code == 409 and crossed.get_json()["error"] == "step_superseded"
    assert last_audit(card_app, "registration.card").error_code == "step_superseded"
    assert kim.register_card(card_pki.agent("kim")).status_code == 200
    # Alex's Confirm and Cancel buttons act on Alex's step, which is gone: refused, and
    # Kim's step is neither confirmed nor cancelled.
    for path in ("/register/confirm", "/register/cancel"):
        assert error_code_of(client.post(path, data=form_of(alex_page))) == "csrf_invalid"
        current = {**form_of(alex_page), "csrf_token": browser_csrf(client)}
        refused = client.post(path, data=current)
        assert refused.status_code == 409 and error_code_of(refused) == "step_superseded"
        entry = audits(card_app, "registration.")[0]
        assert entry.error_code == "step_superseded" and entry.subject == KIM[0]
    _nothing_stored(card_app, ALEX[0], ALEX[1])
    _nothing_stored(card_app, KIM[0], KIM[1])
    assert broker_of(card_app).repos.sessions.active_for_account(KIM[0]) == []
    # Kim's own page still confirms Kim's registration.
    assert kim.register_confirm().status_code == 200
    assert broker_of(card_app).repos.registrations.by_mail(KIM[0]) is not None


def test_a_confirmation_posted_again_is_refused_and_audited(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    card_browser.register_card(card_pki.agent("alex"))
    page = card_browser.client.get("/register/confirm").get_data(as_text=True)
    kept = card_browser.client.get_cookie(card_app.config["SESSION_COOKIE_NAME"])
    assert kept is not None
    assert card_browser.client.post("/register/confirm", data=form_of(page)).status_code == 200
    # The browser's cookie from before the confirmation, and its form, sent again.
    card_browser.client.set_cookie(kept.key, kept.value)
    again = card_browser.client.post("/register/confirm", data=form_of(page))
    assert again.status_code == 400 and error_code_of(again) == "registration_expired"
    entry = last_audit(card_app, "registration.create")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "registration_expired"
    assert entry.details["endpoint"] == "registration.confirm"


def test_a_stale_confirmation_leaves_a_step_not_yet_at_the_card_alone(
    card_app: Flask, card_pki: CardPki
) -> None:
    # Alex's confirmation page is left open; Kim, in another tab, is at step 2 and has
    # not presented her card yet. Alex's Confirm must not end Kim's step.
    client = card_app.test_client()
    second_tab = client.get("/register").get_data(as_text=True)
    alex = CardBrowser(client)
    assert alex.register_password(ALEX[0]).status_code == 303
    assert alex.register_card(card_pki.agent("alex")).status_code == 200
    alex_page = client.get("/register/confirm").get_data(as_text=True)
    assert _begin_in_a_tab_opened_earlier(client, second_tab, KIM[0]).status_code == 303
    spent = client.post("/register/confirm", data=form_of(alex_page))
    assert error_code_of(spent) == "csrf_invalid"  # Kim's password spent its token
    current = {**form_of(alex_page), "csrf_token": browser_csrf(client)}
    refused = client.post("/register/confirm", data=current)
    assert refused.status_code == 409 and error_code_of(refused) == "step_superseded"
    entry = last_audit(card_app, "registration.create")
    assert entry.error_code == "step_superseded" and entry.subject == KIM[0]
    assert CardBrowser(client).register_card(card_pki.agent("kim")).status_code == 200


def test_a_form_from_a_page_that_names_no_step_starts_again_and_keeps_the_step(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    # A confirmation page shown before pages named their step (open across an upgrade):
    # the person is asked to start again, which leads back to their own step.
    card_browser.register_password(ALEX[0])
    card_browser.register_card(card_pki.agent("alex"))
    page = card_browser.client.get("/register/confirm").get_data(as_text=True)
    old_form = {k: v for k, v in form_of(page).items() if k != "step"}
    refused = card_browser.client.post("/register/confirm", data=old_form)
    assert refused.status_code == 400 and error_code_of(refused) == "registration_expired"
    entry = last_audit(card_app, "registration.create")
    assert entry.error_code == "registration_expired" and entry.subject == ALEX[0]
    _nothing_stored(card_app, ALEX[0], ALEX[1])
    assert card_browser.client.get("/register").location == "/register/confirm"
    assert card_browser.register_confirm().status_code == 200


def test_step_one_refused_while_the_directory_was_down_cannot_be_sent_again(
    card_app_factory: CardAppFactory, own_slapd: Slapd
) -> None:
    # Alex begins registering while the directory hangs and walks away from the "try
    # again" page. Sent again by the next person, the form would begin Alex's
    # registration in their browser.
    app = card_app_factory(directory_slapd=own_slapd)
    client = app.test_client()
    start = client.get("/register").get_data(as_text=True)
    form = form_of(start, email=ALEX[0], password=DEMO_PASSWORD)
    with own_slapd.paused():
        down = client.post("/register", data=form)
    assert down.status_code == 503 and error_code_of(down) == "directory_unavailable"

    replay = client.post("/register", data=form)
    assert replay.status_code == 400 and error_code_of(replay) == "csrf_invalid"
    page = replay.get_data(as_text=True)
    assert f'value="{ALEX[0]}"' in page and DEMO_PASSWORD not in page
    entry = last_audit(app, "csrf.refused")
    assert entry.error_code == "csrf_invalid"
    assert entry.details["endpoint"] == "registration.submit_password"
    assert client.get("/register").status_code == 200  # nothing begun: still step 1
    assert last_audit(app, "registration.start").error_code == "directory_unavailable"


def test_a_confirmation_refused_while_the_directory_was_down_cannot_be_sent_again(
    naming_none: Flask, card_pki: CardPki, own_slapd: Slapd
) -> None:
    # Alex types the password at the confirmation while the directory hangs and walks
    # away. Sent again by the next person, the form would link the card and sign them
    # in with it as Alex.
    app = naming_none
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    assert browser.register_card(card_pki.agent("alex")).status_code == 200
    page = browser.client.get("/register/confirm").get_data(as_text=True)
    form = form_of(page, password=DEMO_PASSWORD)
    with own_slapd.paused():
        down = browser.client.post("/register/confirm", data=form)
    assert down.status_code == 503 and error_code_of(down) == "directory_unavailable"

    replay = browser.client.post("/register/confirm", data=form)
    assert replay.status_code == 400 and error_code_of(replay) == "csrf_invalid"
    assert DEMO_PASSWORD not in replay.get_data(as_text=True)
    entry = last_audit(app, "csrf.refused")
    assert (
        entry.error_code == "csrf_invalid" and entry.details["endpoint"] == "registration.confirm"
    )
    _nothing_stored(app, ALEX[0], ALEX[1])
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
