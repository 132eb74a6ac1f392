"""Card sign-in refusals: each with its stable code, its plain message, its audit entry,
and no session left behind."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of
from card_fixtures import CardAppFactory
from card_support import (
    ALEX,
    CHRIS,
    JO,
    LEE,
    PAT,
    PIN,
    CardBrowser,
    CardPki,
    SimulatedAgent,
    audits,
    last_audit,
    register_card,
)
from flask import Flask
from ldap3 import MODIFY_DELETE, Connection
from oidc_support import Browser, query_of

from careid_broker.admin.reasons import Reason, RemovalReason
from careid_broker.admin.removal import Removal, remove_registration
from careid_broker.admin.rights import Actor
from careid_broker.codes import AupRoute, BrokerCode, aup_message, message_for
from careid_broker.store import Outcome
from careid_devkit.ocsp_responder import start_pki_server
from careid_devkit.pki import init_pki
from careid_devkit.slapd import Slapd
from careid_protocol.errors import ErrorCode
from support.clock import FakeClock
from support.damaged_certificates import unreadable_name, with_version
from support.directory_entries import give_address_to_new_entry, rename_entry


def _refused(
    app: Flask, card_browser: CardBrowser, card: str, pki: CardPki, *, tx: str | None = None
):
    card_browser.open_login(tx)
    return card_browser.sign_in(pki.agent(card), tx)


def _assert_refusal(app: Flask, response, code: ErrorCode, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == code.value
    assert body["message"] == message_for(code)
    assert body["request_id"]
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    entry = last_audit(app, "signin.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == code.value
    assert entry.client_address == "127.0.0.1"


def test_an_unregistered_card_is_offered_registration(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    response = _refused(card_app, card_browser, "alex", card_pki)
    _assert_refusal(card_app, response, BrokerCode.CARD_NOT_REGISTERED, 403)
    assert response.get_json()["register"] == "/register"
    entry = last_audit(card_app, "signin.card")
    agent = card_pki.agent("alex")
    assert entry.subject == ALEX[1] and entry.details["uuid"] == ALEX[1]
    assert entry.details["cert_serial"] == agent.serial_hex
    assert entry.details["certificate_validated"] is True


def test_the_registration_offer_keeps_the_rp_transaction(
    card_app: Flask, card_pki: CardPki
) -> None:
    rp = Browser(card_app.test_client())
    tx = query_of(rp.authorize().location)["tx"]
    card_browser = CardBrowser(rp.client)
    response = _refused(card_app, card_browser, "alex", card_pki, tx=tx)
    assert response.get_json()["register"] == f"/register?tx={tx}"
    assert last_audit(card_app, "signin.card").relying_party == "rp"


@pytest.mark.parametrize(
    ("person", "card", "code"),
    [
        (JO, "jo", BrokerCode.ACCOUNT_DISABLED),
        (CHRIS, "chris", BrokerCode.AUP_NOT_ACCEPTED),
        (PAT, "pat", BrokerCode.CARE_IDENTITY_INACTIVE),
    ],
)
def test_the_directory_refuses_accounts_and_care_identities_that_may_not_sign_in(
    card_app: Flask,
    card_pki: CardPki,
    card_browser: CardBrowser,
    person: tuple[str, str, str],
    card: str,
    code: ErrorCode,
) -> None:
    register_card(card_app, card_pki.agent(card), person[0])
    response = _refused(card_app, card_browser, card, card_pki)
    _assert_refusal(card_app, response, code, 403)
    assert broker_of(card_app).repos.sessions.active_for_account(person[0]) == []
    entry = last_audit(card_app, "signin.card")
    assert entry.subject == person[0] and entry.organisation == "RX1"
    if code is BrokerCode.AUP_NOT_ACCEPTED:
        assert response.get_json()["aup"] == broker_of(card_app).config.signin.aup_url


@pytest.mark.parametrize(
    ("card", "code", "status"),
    [
        ("alex_expired", ErrorCode.CERTIFICATE_EXPIRED, 403),
        ("alex_revoked", ErrorCode.CERTIFICATE_REVOKED, 403),
        ("alex_untrusted", ErrorCode.CERTIFICATE_UNTRUSTED, 403),
    ],
)
def test_bad_certificates_are_refused_even_for_a_registered_identity(
    card_app: Flask,
    card_pki: CardPki,
    card_browser: CardBrowser,
    card: str,
    code: ErrorCode,
    status: int,
) -> None:
    register_card(card_app, card_pki.agent("alex"), ALEX[0])
    response = _refused(card_app, card_browser, card, card_pki)
    _assert_refusal(card_app, response, code, status)
    entry = last_audit(card_app, "signin.card")
    assert entry.details["certificate_validated"] is False
    assert entry.details["cert_serial"] == card_pki.agent(card).serial_hex
    assert entry.details["uuid"] == ALEX[1]  # as the certificate claims it


DAMAGES = {
    "issuer": lambda der: unreadable_name(der, "issuer"),
    "subject": lambda der: unreadable_name(der, "subject"),
    "version": lambda der: with_version(der, 3),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_certificate_the_broker_cannot_fully_read_is_refused_as_malformed(
    card_app: Flask,
    card_pki: CardPki,
    card_browser: CardBrowser,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    # cryptography reads a name only when first asked, and a bad version is not a
    # ValueError: each was once a 500 with no audit entry.
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    card_browser.open_login()
    challenge = card_browser.challenge().get_json()["challenge"]
    token = agent.sign(challenge, certificate=DAMAGES[damage](agent.certificate_der))
    with caplog.at_level(logging.WARNING):
        response = card_browser.authenticate(token, challenge)
    _assert_refusal(card_app, response, ErrorCode.CERTIFICATE_MALFORMED, 403)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    entry = last_audit(card_app, "signin.card")
    assert entry.details["certificate_validated"] is False
    if damage != "version":  # the serial is still there to trace
        assert entry.details["cert_serial"] == agent.serial_hex


def test_no_revocation_status_fails_closed(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory(
        pki=card_pki.pki_settings(
            ocsp={"responder_url": "http://127.0.0.1:9/ocsp", "timeout_seconds": 1}
        )
    )
    register_card(app, card_pki.agent("alex"), ALEX[0])
    card_browser = CardBrowser(app.test_client())
    response = _refused(app, card_browser, "alex", card_pki)
    _assert_refusal(app, response, ErrorCode.REVOCATION_UNAVAILABLE, 503)
    assert response.headers["Retry-After"]


def test_a_card_whose_issuing_ca_is_revoked_is_refused_naming_the_ca(
    card_app_factory: CardAppFactory, card_clock: FakeClock, tmp_path: Path
) -> None:
    # A PKI of this test's own: its issuing CA is revoked by its root, on the root's CRL
    # that the issuing CA's certificate names; the card itself is good (its OCSP says so).
    init_pki(tmp_path / "pki")
    with start_pki_server(tmp_path / "pki", "127.0.0.1", 0, clock=card_clock) as server:
        pki = init_pki(tmp_path / "pki", base_url=server.url, force=True)
        agent = SimulatedAgent(
            pki.issue_card(uuid=ALEX[1], name=ALEX[2], algorithm="p256", pin=PIN)
        )
        pki.revoke_issuing_ca(reason="cACompromise")
        app = card_app_factory(
            pki={
                "trust_anchors": [str(pki.paths.root_certificate)],
                "intermediates": [str(pki.paths.issuing_certificate)],
                "revocation": "ocsp",
                "ocsp": {"timeout_seconds": 2},
            }
        )
        register_card(app, agent, ALEX[0])
        card_browser = CardBrowser(app.test_client())
        card_browser.open_login()
        response = card_browser.sign_in(agent)
    _assert_refusal(app, response, ErrorCode.CERTIFICATE_REVOKED, 403)
    entry = last_audit(app, "signin.card")
    issuing = pki.issuing_certificate
    assert entry.details["revoked_ca_subject"] == issuing.subject.rfc4514_string()
    assert entry.details["revoked_ca_serial"] == f"{issuing.serial_number:X}"
    assert entry.details["cert_serial"] == agent.serial_hex
    assert entry.details["certificate_validated"] is False


def test_a_directory_that_is_down_denies(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd)
    register_card(app, card_pki.agent("alex"), ALEX[0])
    own_slapd.stop()
    card_browser = CardBrowser(app.test_client())
    response = _refused(app, card_browser, "alex", card_pki)
    _assert_refusal(app, response, BrokerCode.DIRECTORY_UNAVAILABLE, 503)


def test_a_registration_whose_account_left_the_directory_is_refused(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    register_card(card_app, card_pki.agent("alex"), "gone.away@nhs.net")
    response = _refused(card_app, card_browser, "alex", card_pki)
    _assert_refusal(card_app, response, BrokerCode.CARD_ACCOUNT_MISSING, 403)


def test_a_card_linked_to_an_account_the_directory_gives_another_identity_is_refused(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    # Lee's account is Care Identity 555000000004 in the directory; a link to Alex's
    # card would send Lee's RPs Alex's UUID with Lee's roles, or the reverse.
    register_card(card_app, card_pki.agent("alex"), LEE[0])
    response = _refused(card_app, card_browser, "alex", card_pki)
    _assert_refusal(card_app, response, BrokerCode.CARD_IDENTITY_MISMATCH, 403)
    assert broker_of(card_app).repos.sessions.active_for_account(LEE[0]) == []


ALEX_DN = "uid=alex.morgan,ou=people,dc=nhs,dc=example"


def _entry_uuid(app: Flask, mail: str) -> str:
    account = broker_of(app).directory.find_account(mail)
    assert account is not None and account.entry_id
    return account.entry_id


def test_a_card_does_not_sign_in_to_the_new_entry_its_address_was_given_to(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    # Alex registers; Alex's entry is deleted and the address given to a new starter's
    # entry (new entryUUID, no Care Identity named). Alex's card must not sign in to it.
    app = card_app_factory(directory_slapd=own_slapd)
    agent = card_pki.agent("alex")
    CardBrowser(app.test_client()).register(agent, ALEX[0])
    registered_entry = _entry_uuid(app, ALEX[0])
    sessions = broker_of(app).repos.sessions
    # The sign-in that registering started; the new entry's holder has none.
    before = sessions.active_for_account(ALEX[0])
    give_address_to_new_entry(own_slapd, "alex.morgan", "alex.morgan.new")
    response = _refused(app, CardBrowser(app.test_client()), "alex", card_pki)
    assert response.status_code == 403, response.get_data(as_text=True)
    code = BrokerCode.REGISTRATION_ACCOUNT_CHANGED
    body = response.get_json()
    assert body["error"] == code.value and body["message"] == message_for(code)
    assert "used to have this NHSmail address" in body["message"]
    assert sessions.active_for_account(ALEX[0]) == before  # no new session
    entry = last_audit(app, "signin.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == code.value
    assert entry.subject == ALEX[0] and entry.details["uuid"] == ALEX[1]
    assert audits(app, "subject.reassigned") == []  # no sign-in went on to the new entry
    registration = broker_of(app).repos.registrations.by_uuid(ALEX[1])
    assert registration is not None and registration.account_entry_id == registered_entry


def test_a_card_still_signs_in_after_its_entry_is_renamed(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd)
    agent = card_pki.agent("alex")
    CardBrowser(app.test_client()).register(agent, ALEX[0])
    rename_entry(own_slapd, "alex.morgan", "alex.morgan2")  # same entry, same entryUUID
    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200


def test_a_registration_from_before_entry_ids_takes_its_entry_s_at_sign_in(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd)
    agent = card_pki.agent("alex")
    register_card(app, agent, ALEX[0])  # as made before revision 0014: no entry id
    repos = broker_of(app).repos
    before = repos.registrations.by_uuid(ALEX[1])
    assert before is not None and before.account_entry_id is None
    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200  # at the registered DN
    after = repos.registrations.by_uuid(ALEX[1])
    assert after is not None and after.account_entry_id == _entry_uuid(app, ALEX[0])


def test_a_registration_from_before_entry_ids_is_held_to_its_dn(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd)
    register_card(app, card_pki.agent("alex"), ALEX[0])  # no entry id, never signed in
    give_address_to_new_entry(own_slapd, "alex.morgan", "alex.morgan.new", care_identity=ALEX[1])
    response = _refused(app, CardBrowser(app.test_client()), "alex", card_pki)
    _assert_refusal(app, response, BrokerCode.REGISTRATION_ACCOUNT_CHANGED, 403)
    registration = broker_of(app).repos.registrations.by_uuid(ALEX[1])
    assert registration is not None and registration.account_entry_id is None


@pytest.fixture
def naming_none(card_app_factory: CardAppFactory, own_slapd: Slapd) -> Flask:
    """A broker whose directory names no Care Identity for Alex's account."""
    admin = Connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password, auto_bind=True)
    try:
        assert admin.modify(
            "uid=alex.morgan,ou=people,dc=nhs,dc=example",
            {"careidCareIdentityUuid": [(MODIFY_DELETE, [])]},
        )
    finally:
        admin.unbind()
    return card_app_factory(directory_slapd=own_slapd)


def test_a_card_the_directory_gives_to_another_account_does_not_sign_in_to_one_naming_none(
    naming_none: Flask, card_pki: CardPki
) -> None:
    # A link made before the directory recorded Lee's Care Identity on Lee's account:
    # registration would refuse it now, and so does every sign-in.
    app = naming_none
    register_card(app, card_pki.agent("lee"), ALEX[0])
    response = _refused(app, CardBrowser(app.test_client()), "lee", card_pki)
    _assert_refusal(app, response, BrokerCode.CARD_IDENTITY_MISMATCH, 403)
    assert broker_of(app).repos.sessions.active_for_card(LEE[1]) == []
    entry = last_audit(app, "signin.card")
    assert entry.subject == ALEX[0] and entry.details["uuid"] == LEE[1]


def test_a_card_the_directory_gives_to_no_other_account_signs_in_to_one_naming_none(
    naming_none: Flask, card_pki: CardPki
) -> None:
    app = naming_none
    register_card(app, card_pki.agent("alex"), ALEX[0])
    card_browser = CardBrowser(app.test_client())
    card_browser.open_login()
    response = card_browser.sign_in(card_pki.agent("alex"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert broker_of(app).repos.sessions.active_for_card(ALEX[1])


def test_without_a_pki_section_card_sign_in_says_it_is_unavailable(
    card_app_factory: CardAppFactory,
) -> None:
    app = card_app_factory(pki=None)
    card_browser = CardBrowser(app.test_client())
    page = card_browser.open_login()
    text = page.get_data(as_text=True)
    assert "card-signin.js" not in text and "data-challenge-url" not in text
    assert "connect-src" not in page.headers["Content-Security-Policy"]
    for path in ("/card/challenge", "/card/authenticate"):
        response = card_browser.post_json(path, {"tx": None})
        assert response.status_code == 501
        assert response.get_json()["error"] == "card_signin_unavailable"
        entry = last_audit(app, "signin.card")
        assert entry.outcome is Outcome.FAILURE and entry.error_code == "card_signin_unavailable"
        assert entry.details["endpoint"] == path[1:].replace("/", ".")
    fallback = card_browser.client.get("/login/card")
    assert fallback.status_code == 501
    assert "card_signin_unavailable" in fallback.get_data(as_text=True)
    assert app.test_client().get("/register").status_code == 501


@pytest.mark.parametrize("writable", [False, True])
def test_a_card_refused_for_the_aup_gets_the_one_message_for_this_directory(
    card_app_factory: CardAppFactory, card_pki: CardPki, writable: bool
) -> None:
    app = card_app_factory(directory={"writable": True} if writable else {})
    register_card(app, card_pki.agent("chris"), CHRIS[0])
    rp = Browser(app.test_client())
    tx = query_of(rp.authorize().location)["tx"]
    response = _refused(app, CardBrowser(rp.client), "chris", card_pki, tx=tx)
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] == "aup_not_accepted"
    if writable:
        # A card cannot record acceptance: the way to accept it here, by password.
        assert body["message"] == aup_message(AupRoute.PASSWORD)
        assert body["aup"] == f"/login/aup?tx={tx}"
        assert "portal" not in body["message"]
    else:
        assert (
            body["message"]
            == aup_message(AupRoute.PORTAL)
            == message_for(BrokerCode.AUP_NOT_ACCEPTED)
        )
        assert "NHSmail portal" in body["message"]
        assert body["aup"] == broker_of(app).config.signin.aup_url
    entry = last_audit(app, "signin.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "aup_not_accepted"
    assert entry.subject == CHRIS[0]


def test_a_registration_removed_while_its_card_signs_in_leaves_no_session(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    broker = broker_of(card_app)
    directory = broker.directory.real
    removed: list[Removal] = []

    class RemovedMeanwhile:
        """The directory, with an administrator removing the (lost) card's registration
        while the sign-in waits for the Care Identity to be read."""

        def __getattr__(self, name: str) -> Any:
            return getattr(directory, name)

        def find_care_identity(self, uuid: str) -> Any:
            if not removed:
                removed.append(
                    remove_registration(
                        broker.admin,
                        Actor(name=LEE[0], org_codes=frozenset({"RX1"}), via="console"),
                        card_uuid=ALEX[1],
                        reason=Reason(kind=RemovalReason.LOST_CARD),
                    )
                )
            return directory.find_care_identity(uuid)

    broker.directory.use(RemovedMeanwhile())
    response = _refused(card_app, card_browser, "alex", card_pki)
    assert removed and broker.repos.registrations.by_uuid(ALEX[1]) is None
    _assert_refusal(card_app, response, BrokerCode.CARD_NOT_REGISTERED, 403)
    assert broker.repos.sessions.active_for_card(ALEX[1]) == []
    entry = last_audit(card_app, "signin.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "card_not_registered"
