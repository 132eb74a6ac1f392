"""Card sign-in that succeeds: the OIDC code flow end to end, assurance, claims, audit."""

from __future__ import annotations

from typing import Any

import pytest
from broker_fixtures import BACKENDS
from broker_support import broker_of, password_login, rp_transaction
from card_fixtures import CardAppFactory
from card_support import ALEX, CardBrowser, CardPki, last_audit, register_card
from flask import Flask
from oidc_support import ALL_SCOPES, Browser, id_token_claims, query_of

from careid_broker.store import Outcome


def _userinfo(card_browser: Browser, access_token: str) -> Any:
    response = card_browser.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {access_token}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_a_registered_card_signs_in_to_an_rp_with_card_assurance_and_care_identity_claims(
    card_app: Flask, card_pki: CardPki
) -> None:
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    rp = Browser(card_app.test_client())
    card = CardBrowser(rp.client)

    authorization = rp.authorize(scope=ALL_SCOPES)
    assert authorization.location.startswith("/login?")
    tx = query_of(authorization.location)["tx"]
    card.open_login(tx)
    answer = card.sign_in(agent, tx)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    # The answer goes on to the RP with its code: the page's script navigates there.
    assert body["redirect"].startswith(f"{rp.redirect_uri}?code=")
    assert isinstance(body["cardSession"], str) and len(body["cardSession"]) >= 43
    authorization.redirect = body["redirect"]
    code = authorization.code
    tokens = rp.redeem(authorization)
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    assert code  # redeemed above
    _, claims = id_token_claims(rp.client, tokens.get_json()["id_token"])
    assert claims["acr"] == "AAL3_SMARTCARD"
    assert claims["amr"] == ["sc", "pin", "hwk"]
    assert claims["authentication_assurance_level"] == "3"
    assert claims["nonce"] == authorization.nonce

    info = _userinfo(rp, tokens.get_json()["access_token"])
    assert info["nhsid_useruid"] == ALEX[1]
    assert info["email"] == ALEX[0]
    roles = info["nhsid_nrbac_roles"]
    assert [(r["role_code"], r["org_code"]) for r in roles] == [("R8000", "RX1")]


def test_a_card_sign_in_by_someone_other_than_the_id_token_hint_gets_no_code(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    # The RP's request named another person by its id_token_hint (OIDC Core §3.1.2.1).
    rp = Browser(card_browser.client)
    tx = rp_transaction(
        card_app,
        card_browser.client,
        client_id=rp.client_id,
        redirect_uri=rp.redirect_uri,
        id_token_hint_sub="someone-else",
    )
    card_browser.open_login(tx)
    answer = card_browser.sign_in(agent, tx)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    redirect = answer.get_json()["redirect"]
    assert redirect.startswith(rp.redirect_uri)
    params = query_of(redirect)
    assert "code" not in params and params["error"] == "login_required"
    assert params["state"] == "rp-state"
    refused = last_audit(card_app, "oidc.authorize")
    assert refused.outcome is Outcome.FAILURE and refused.details["error"] == "login_required"
    assert refused.subject == ALEX[0]


def test_signing_in_without_an_rp_ends_on_the_signed_in_page_and_is_audited(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    card_browser.open_login()
    answer = card_browser.sign_in(agent)
    assert answer.status_code == 200
    assert answer.get_json()["redirect"] == "/login"
    page = card_browser.client.get("/login").get_data(as_text=True)
    assert "You are signed in" in page and "with your smartcard" in page

    sessions = broker_of(card_app).repos.sessions.active_for_account(ALEX[0])
    assert len(sessions) == 1
    session = sessions[0]
    assert session.acr == "AAL3_SMARTCARD" and session.amr == ("sc", "pin", "hwk")
    assert session.card_uuid == ALEX[1]
    found = broker_of(card_app).repos.sessions.find_by_card_session(
        answer.get_json()["cardSession"]
    )
    assert found is not None and found.sid == session.sid

    entry = last_audit(card_app, "signin.card")
    assert entry.outcome is Outcome.SUCCESS and entry.error_code is None
    assert entry.subject == ALEX[0] and entry.organisation == "RX1"
    assert entry.client_address == "127.0.0.1"
    assert entry.details["uuid"] == ALEX[1]
    assert entry.details["cert_serial"] == agent.serial_hex
    assert entry.details["cert_issuer"] == agent.certificate.issuer.rfc4514_string()
    assert entry.details["revocation"] == "ocsp" and entry.details["certificate_validated"]


@pytest.mark.parametrize("card_name", ["alex_rsa", "alex_p384"])
def test_rsa_and_p384_cards_sign_in_too(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser, card_name: str
) -> None:
    agent = card_pki.agent(card_name)
    register_card(card_app, agent, ALEX[0])
    assert agent.algorithm.value in ("RS256", "ES384")
    card_browser.open_login()
    answer = card_browser.sign_in(agent)
    assert answer.status_code == 200, answer.get_data(as_text=True)


def test_acr_values_aal3_any_steps_a_password_session_up_without_losing_the_request(
    card_app: Flask, card_pki: CardPki
) -> None:
    agent = card_pki.agent("alex")
    register_card(card_app, agent, ALEX[0])
    rp = Browser(card_app.test_client())
    signed_in = password_login(rp.client, ALEX[0])
    assert signed_in.status_code == 303

    authorization = rp.authorize(acr_values="AAL3_ANY")
    params = query_of(authorization.location)
    assert authorization.location.startswith("/login?") and params["card"] == "required"
    card = CardBrowser(rp.client)
    page = card.open_login(params["tx"], card="required").get_data(as_text=True)
    assert 'id="card-signin-button"' in page and 'name="password"' not in page

    answer = card.sign_in(agent, params["tx"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    authorization.redirect = answer.get_json()["redirect"]
    assert authorization.location.startswith(rp.redirect_uri)
    assert authorization.params["state"] == authorization.state
    tokens = rp.redeem(authorization)
    _, claims = id_token_claims(rp.client, tokens.get_json()["id_token"])
    assert claims["acr"] == "AAL3_SMARTCARD"


def test_with_the_session_lock_off_no_card_session_is_handed_out(
    card_app_factory: CardAppFactory, card_pki: CardPki
) -> None:
    app = card_app_factory(card={"session_lock": False})
    agent = card_pki.agent("alex")
    register_card(app, agent, ALEX[0])
    card_browser = CardBrowser(app.test_client())
    card_browser.open_login()
    answer = card_browser.sign_in(agent)
    assert answer.status_code == 200 and answer.get_json()["cardSession"] is None


@pytest.mark.parametrize("issuer", ["http://localhost:80", "http://localhost:80/"])
def test_an_issuer_written_with_its_default_port_signs_cards_in_for_the_browser_s_origin(
    card_app_factory: CardAppFactory, card_pki: CardPki, issuer: str
) -> None:
    # The browser's Origin never carries the scheme's default port, and the agent signs
    # the origin the page has: the broker must expect that one, not the issuer's text.
    app = card_app_factory(broker={"issuer": issuer})
    agent = card_pki.agent("alex")
    register_card(app, agent, ALEX[0])
    card = CardBrowser(app.test_client(), origin="http://localhost")
    card.open_login()
    answer = card.sign_in(agent, origin="http://localhost")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert last_audit(app, "signin.card").outcome is Outcome.SUCCESS
    # What the help page tells people to allow in the agent (which refuses a default port).
    help_page = app.test_client().get("/card/agent-help").get_data(as_text=True)
    assert "<code>http://localhost</code>" in help_page
    # The OIDC issuer is still exactly as configured: relying parties compare it as text.
    discovery = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert discovery["issuer"] == issuer.rstrip("/")
