"""A card revoked by its Registration Authority while its holder is signed in: the next
CRL the broker fetches ends that card's sessions, and the card is refused from then on."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from broker_support import broker_of
from card_fixtures import CardAppFactory
from card_support import (
    ALEX,
    CardBrowser,
    CardPki,
    SimulatedAgent,
    audits,
    last_audit,
    register_card,
)
from cryptography import x509
from sqlalchemy import update

from careid_broker.pki import UrllibFetcher
from careid_broker.pki.crl import distribution_points
from careid_broker.store import EndedSession
from careid_broker.store.models import Registration
from support.clock import FakeClock


def test_a_crl_listing_a_signed_in_card_ends_its_sessions(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    session_ended: list[EndedSession],
) -> None:
    # A certificate of this test's own (revoking a shared one would touch other tests).
    profile = card_pki.issue("alex_lost", ALEX[1], ALEX[2])
    agent = SimulatedAgent(profile)
    app = card_app_factory(pki=card_pki.pki_settings(revocation="crl", crl={"refresh_seconds": 60}))
    register_card(app, agent, ALEX[0])
    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200
    broker = broker_of(app)
    assert broker.repos.sessions.active_for_card(ALEX[1])

    # The Registration Authority revokes the lost card; a minute later the broker's CRL
    # refresher fetches the new CRL.
    serial = x509.load_pem_x509_certificate(profile.certificate_pem.encode()).serial_number
    card_pki.pki.revoke(uuid=ALEX[1], serial=serial, reason="keyCompromise", now=card_clock.now)
    card_clock.advance(timedelta(seconds=61))
    assert broker.card.validator is not None
    assert broker.card.validator.revocation.crl.refresh_due() >= 1

    assert broker.repos.sessions.active_for_card(ALEX[1]) == []
    assert [e.reason for e in session_ended] == ["card_revoked"]
    entry = last_audit(app, "card.revoked")
    assert entry.subject == ALEX[0] and entry.details["sessions_ended"] == 1
    # And the card cannot sign in again.
    again = CardBrowser(app.test_client())
    again.open_login()
    refused = again.sign_in(agent)
    assert refused.status_code == 403 and refused.get_json()["error"] == "certificate_revoked"


def test_cards_a_new_crl_does_not_list_keep_their_sessions(
    card_app_factory: CardAppFactory, card_pki: CardPki, card_clock: FakeClock
) -> None:
    agent = card_pki.agent("alex")
    app = card_app_factory(pki=card_pki.pki_settings(revocation="crl", crl={"refresh_seconds": 60}))
    register_card(app, agent, ALEX[0])
    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200
    other = card_pki.issue("kim_other", "555000000451", "Someone Else")
    serial = x509.load_pem_x509_certificate(other.certificate_pem.encode()).serial_number
    card_pki.pki.revoke(uuid="555000000451", serial=serial, now=card_clock.now)
    card_clock.advance(timedelta(seconds=61))
    broker = broker_of(app)
    assert broker.card.validator is not None
    broker.card.validator.revocation.crl.refresh_due()
    assert broker.repos.sessions.active_for_card(ALEX[1])


def test_a_revoked_answer_at_a_sign_in_ends_the_cards_other_sessions(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    session_ended: list[EndedSession],
) -> None:
    # OCSP (no CRL here): the card is signed in on one workstation; revoked, it is tried
    # on another. The refusal there ends the first session too.
    profile = card_pki.issue("alex_stolen", ALEX[1], ALEX[2])
    agent = SimulatedAgent(profile)
    app = card_app_factory(pki=card_pki.pki_settings(ocsp={"max_good_age_seconds": 60}))
    register_card(app, agent, ALEX[0])
    first = CardBrowser(app.test_client())
    first.open_login()
    assert first.sign_in(agent).status_code == 200
    serial = x509.load_pem_x509_certificate(profile.certificate_pem.encode()).serial_number
    card_pki.pki.revoke(uuid=ALEX[1], serial=serial, now=card_clock.now)
    card_clock.advance(timedelta(seconds=61))  # past the cached good answer
    second = CardBrowser(app.test_client())
    second.open_login()
    refused = second.sign_in(agent)
    assert refused.get_json()["error"] == "certificate_revoked"
    assert broker_of(app).repos.sessions.active_for_card(ALEX[1]) == []
    assert [e.reason for e in session_ended] == ["card_revoked"]


def test_an_administrator_checks_a_card_now_and_a_revoked_one_loses_its_sessions(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    session_ended: list[EndedSession],
) -> None:
    # OCSP with an hour-long good answer cached: without "check now" the revoked card
    # would keep its session until the cache ran out.
    profile = card_pki.issue("alex_checked", ALEX[1], ALEX[2])
    agent = SimulatedAgent(profile)
    app = card_app_factory(pki=card_pki.pki_settings(ocsp={"max_good_age_seconds": 3600}))
    registration = register_card(app, agent, ALEX[0])
    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200
    check = broker_of(app).revocation_check
    assert check.check(registration, actor="lee.admin@nhs.net").result.value == "good"

    serial = x509.load_pem_x509_certificate(profile.certificate_pem.encode()).serial_number
    card_pki.pki.revoke(uuid=ALEX[1], serial=serial, now=card_clock.now)
    outcome = check.check(registration, actor="lee.admin@nhs.net")
    assert (outcome.result.value, outcome.code, outcome.sessions_ended) == (
        "revoked",
        "certificate_revoked",
        1,
    )
    assert [e.reason for e in session_ended] == ["card_revoked"]
    entry = last_audit(app, "admin.revocation.check")
    assert entry.actor == "lee.admin@nhs.net" and entry.details["result"] == "revoked"


def test_a_registration_kept_without_its_certificate_is_not_guessed_at(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory()
    registration = dataclasses.replace(
        register_card(app, card_pki.agent("alex"), ALEX[0]), cert_der=None
    )
    outcome = broker_of(app).revocation_check.check(registration, actor="cli:test")
    assert outcome.result.value == "no_certificate" and outcome.sessions_ended == 0


def test_a_renewed_card_becomes_the_one_an_administrator_checks(
    card_app_factory: CardAppFactory, card_pki: CardPki, card_clock: FakeClock
) -> None:
    # Registered with one card; the Registration Authority renews it (same Care
    # Identity, new certificate) and the holder signs in with the new one.
    old = SimulatedAgent(
        card_pki.issue(
            "alex_before_renewal", ALEX[1], ALEX[2], not_before=card_clock.now - timedelta(days=30)
        )
    )
    new = SimulatedAgent(card_pki.issue("alex_after_renewal", ALEX[1], ALEX[2]))
    app = card_app_factory(pki=card_pki.pki_settings(ocsp={"max_good_age_seconds": 3600}))
    register_card(app, old, ALEX[0])
    broker = broker_of(app)

    def sign_in(agent: SimulatedAgent) -> None:
        browser = CardBrowser(app.test_client())
        browser.open_login()
        assert browser.sign_in(agent).status_code == 200

    sign_in(new)
    registration = broker.repos.registrations.by_uuid(ALEX[1])
    assert registration is not None and registration.cert_der is not None
    assert registration.cert_serial == new.serial_hex.lower()
    held = x509.load_der_x509_certificate(registration.cert_der)
    assert f"{held.serial_number:x}" == new.serial_hex.lower()
    entry = last_audit(app, "registration.certificate_renewed")
    assert entry.subject == ALEX[0]
    assert entry.details["previous_serial"] == old.serial_hex.lower()
    assert entry.details["cert_serial"].lower() == new.serial_hex.lower()
    # The same card again changes nothing and is not audited again; nor does the card
    # it replaced (still valid, until its revocation): the registration keeps the newer.
    sign_in(new)
    sign_in(old)
    assert len(audits(app, "registration.certificate_renewed")) == 1
    kept = broker.repos.registrations.by_uuid(ALEX[1])
    assert kept is not None and kept.cert_serial == new.serial_hex.lower()

    # The new card is reported lost: "check now" asks about it, not the old one.
    card_pki.pki.revoke(uuid=ALEX[1], serial=held.serial_number, now=card_clock.now)
    outcome = broker.revocation_check.check(registration, actor="lee.admin@nhs.net")
    assert (outcome.result.value, outcome.sessions_ended) == ("revoked", 3)


def test_a_registration_from_before_certificates_were_kept_gets_its_own_at_sign_in(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory()
    agent = card_pki.agent("alex")
    register_card(app, agent, ALEX[0])
    broker = broker_of(app)
    with broker.store.transaction() as session:  # as migration 0006 left older links
        session.execute(update(Registration).values(cert_der=None))
    before = broker.repos.registrations.by_uuid(ALEX[1])
    assert before is not None and before.cert_der is None

    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200
    after = broker.repos.registrations.by_uuid(ALEX[1])
    assert after is not None and after.cert_der is not None
    held = x509.load_der_x509_certificate(after.cert_der)
    assert f"{held.serial_number:x}" == agent.serial_hex.lower()
    assert after.cert_serial == before.cert_serial
    # The same card: nothing was renewed, so nothing says so.
    assert audits(app, "registration.certificate_renewed") == []
    assert broker.revocation_check.check(after, actor="cli:test").result.value == "good"


def test_an_administrators_crl_refresh_fetches_each_crl_and_ends_listed_cards_sessions(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    tmp_path: Path,
) -> None:
    # What `careid-broker revocation refresh-crls` does: in a process holding no CRL, the
    # registered card's distribution point is fetched, verified and acted on.
    profile = card_pki.issue("alex_refresh", ALEX[1], ALEX[2])
    agent = SimulatedAgent(profile)
    crl_copy = tmp_path / "copy.crl"
    app = card_app_factory(pki=card_pki.pki_settings(revocation="crl"))
    register_card(app, agent, ALEX[0])
    browser = CardBrowser(app.test_client())
    browser.open_login()
    assert browser.sign_in(agent).status_code == 200
    broker = broker_of(app)
    serial = x509.load_pem_x509_certificate(profile.certificate_pem.encode()).serial_number
    card_pki.pki.revoke(uuid=ALEX[1], serial=serial, reason="keyCompromise", now=card_clock.now)
    card_clock.advance(timedelta(seconds=1))

    refreshed = broker.revocation_check.refresh_crls(actor="ops")
    assert refreshed is not None
    by_location = {r.crl.source.location: r for r in refreshed}
    (url,) = distribution_points(x509.load_pem_x509_certificate(profile.certificate_pem.encode()))
    card_crl = by_location[url]
    assert card_crl.crl.ok and card_crl.crl.source.named_by == "registered cards' certificates"
    assert serial in card_crl.crl.serials and card_crl.crl.next_update is not None
    assert card_crl.sessions_ended == 1
    assert broker.repos.sessions.active_for_card(ALEX[1]) == []
    entry = last_audit(app, "admin.revocation.refresh_crls")
    assert entry.outcome == "success" and entry.actor == "ops"
    assert entry.details["sessions_ended"] == 1 and entry.details["crls_failed"] == []

    # A configured CRL file that cannot be read is reported, and the refresh fails.
    crl_copy.write_bytes(UrllibFetcher().get(url, 5.0))
    app = card_app_factory(
        pki=card_pki.pki_settings(revocation="crl", crl={"files": [str(crl_copy)]})
    )
    crl_copy.unlink()
    refreshed = broker_of(app).revocation_check.refresh_crls(actor="ops")
    assert refreshed is not None
    failed = [r.crl for r in refreshed if not r.crl.ok]
    assert [f.source.location for f in failed] == [str(crl_copy)]
    assert failed[0].problem is not None and "cannot fetch" in failed[0].problem
    entry = last_audit(app, "admin.revocation.refresh_crls")
    assert entry.outcome == "failure" and entry.error_code == "revocation_unavailable"


def test_a_stored_certificate_that_no_longer_parses_is_invalid_not_a_crash(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory()
    registration = dataclasses.replace(
        register_card(app, card_pki.agent("alex"), ALEX[0]), cert_der=b"\x30\x03damaged"
    )
    outcome = broker_of(app).revocation_check.check(registration, actor="cli:test")
    assert (outcome.result.value, outcome.code) == ("invalid", "certificate_malformed")
    entry = last_audit(app, "admin.revocation.check")
    assert entry.details["result"] == "invalid" and entry.error_code == "certificate_malformed"


def test_a_crl_listing_an_old_card_ends_what_it_opened_after_the_renewed_card_signed_in(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    session_ended: list[EndedSession],
) -> None:
    old = SimulatedAgent(card_pki.issue("alex_old_card", ALEX[1], ALEX[2]))
    renewed = SimulatedAgent(card_pki.issue("alex_renewed_card", ALEX[1], ALEX[2]))
    app = card_app_factory(pki=card_pki.pki_settings(revocation="crl", crl={"refresh_seconds": 60}))
    register_card(app, old, ALEX[0])
    # The old card (soon reported lost) signs in; then the holder's renewed card does,
    # and becomes the registration's certificate.
    finder = CardBrowser(app.test_client())
    finder.open_login()
    assert finder.sign_in(old).status_code == 200
    holder = CardBrowser(app.test_client())
    holder.open_login()
    assert holder.sign_in(renewed).status_code == 200
    broker = broker_of(app)
    registration = broker.repos.registrations.by_uuid(ALEX[1])
    assert registration is not None and registration.cert_serial.upper() == renewed.serial_hex

    card_pki.pki.revoke(
        uuid=ALEX[1],
        serial=old.certificate.serial_number,
        reason="keyCompromise",
        now=card_clock.now,
    )
    card_clock.advance(timedelta(seconds=61))
    assert broker.card.validator is not None
    assert broker.card.validator.revocation.crl.refresh_due() >= 1

    # The old card's session ended; the renewed card's goes on.
    [still] = broker.repos.sessions.active_for_card(ALEX[1])
    assert [e.reason for e in session_ended] == ["card_revoked"]
    assert session_ended[0].sid != still.sid
    assert still.cert_serial == renewed.serial_hex
    entry = last_audit(app, "card.revoked")
    assert entry.subject == ALEX[0] and entry.details["sessions_ended"] == 1
    assert entry.details["opened_with_the_revoked_certificate"] is True
