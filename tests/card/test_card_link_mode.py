"""Link modes: by UUID (a renewed card keeps working) or pinned to the certificate (a
renewed card must be registered again, which its holder can do)."""

from __future__ import annotations

from broker_support import broker_of
from card_fixtures import CardAppFactory
from card_support import ALEX, CardBrowser, CardPki, register_card

from careid_broker.store import LinkMode


def _sign_in(app, agent):
    browser = CardBrowser(app.test_client())
    browser.open_login()
    return browser.sign_in(agent)


def test_by_uuid_a_renewed_card_signs_in_with_the_old_registration(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory(card={"link_mode": "uuid"})
    register_card(app, card_pki.agent("alex"), ALEX[0])
    renewed = card_pki.agent("alex_renewed")
    assert renewed.serial_hex != card_pki.agent("alex").serial_hex
    assert _sign_in(app, renewed).status_code == 200


def test_pinned_to_the_certificate_a_renewed_card_must_register_again(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory(card={"link_mode": "certificate"})
    old, renewed = card_pki.agent("alex"), card_pki.agent("alex_renewed")
    register_card(app, old, ALEX[0], link_mode=LinkMode.CERTIFICATE)
    assert _sign_in(app, old).status_code == 200

    refused = _sign_in(app, renewed)
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "card_certificate_not_registered"
    assert refused.get_json()["register"] == "/register"

    # The holder registers the renewed card (same UUID, same account): the pin moves.
    browser = CardBrowser(app.test_client())
    assert browser.register_password(ALEX[0]).status_code == 303
    assert browser.register_card(renewed).status_code == 200
    confirm_page = browser.client.get("/register/confirm").get_data(as_text=True)
    assert 'id="confirm-replaces"' in confirm_page
    assert browser.register_confirm().status_code == 200
    record = broker_of(app).repos.registrations.by_uuid(ALEX[1])
    assert record is not None and record.cert_serial == renewed.serial_hex.lower()
    assert record.how == "self-service-renewal" and record.link_mode is LinkMode.CERTIFICATE

    assert _sign_in(app, renewed).status_code == 200
    assert _sign_in(app, old).get_json()["error"] == "card_certificate_not_registered"


def test_switching_a_deployment_to_certificate_mode_pins_older_uuid_links(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory(card={"link_mode": "certificate"})
    register_card(app, card_pki.agent("alex"), ALEX[0], link_mode=LinkMode.UUID)
    assert _sign_in(app, card_pki.agent("alex")).status_code == 200
    refused = _sign_in(app, card_pki.agent("alex_renewed"))
    assert refused.get_json()["error"] == "card_certificate_not_registered"
