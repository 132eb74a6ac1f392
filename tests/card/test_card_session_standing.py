"""A card's session is held to its Care Identity for as long as it lasts: single sign-on
and refresh read the directory afresh and refuse what a new card sign-in would refuse.

Parts: a real slapd (changed between steps as a Registration Authority would), the
broker in-process with SQLite or PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from card_fixtures import CardAppFactory
from card_support import ALEX, CardBrowser, CardPki, last_audit, register_card
from flask import Flask
from ldap3 import MODIFY_DELETE, MODIFY_REPLACE
from oidc_support import Browser, query_of

from careid_devkit.slapd import Slapd
from support.directory_entries import give_address_to_new_entry, modify_entry

IDENTITY_DN = f"careidUuid={ALEX[1]},ou=careidentities,dc=nhs,dc=example"
ACCOUNT_DN = "uid=alex.morgan,ou=people,dc=nhs,dc=example"
LEE_DN = "uid=lee.admin,ou=people,dc=nhs,dc=example"


def _claims(id_token: str) -> dict[str, Any]:
    payload = id_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


@pytest.fixture
def signed_in(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> Iterator[tuple[Flask, Browser]]:
    """Alex signed in at the broker with the card; an RP in the same browser."""
    app = card_app_factory(directory_slapd=own_slapd)
    agent = card_pki.agent("alex")
    register_card(app, agent, ALEX[0])
    card_browser = CardBrowser(app.test_client())
    card_browser.open_login()
    assert card_browser.sign_in(agent).status_code == 200
    yield app, Browser(card_browser.client)


def test_a_suspended_care_identity_gets_no_more_codes_or_refreshes(
    signed_in: tuple[Flask, Browser], own_slapd: Slapd
) -> None:
    app, rp = signed_in
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    assert "code" in query_of(silent.location), silent.location
    tokens = rp.redeem(silent).get_json()
    assert _claims(tokens["id_token"])["acr"] == "AAL3_SMARTCARD"

    # The Registration Authority suspends the Care Identity while Alex is signed in.
    modify_entry(own_slapd, IDENTITY_DN, {"careidStatus": [(MODIFY_REPLACE, ["inactive"])]})

    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    assert query_of(silent.location).get("error") == "login_required", silent.location
    refused = rp.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    ended = last_audit(app, "session.end")
    assert ended.subject == ALEX[0] and ended.details["reason"] == "account_refused"
    assert "care_identity_inactive" in str(ended.details)


def test_single_sign_on_keeps_the_claims_of_the_card_that_signed_in(
    signed_in: tuple[Flask, Browser], own_slapd: Slapd
) -> None:
    _, rp = signed_in
    # The account stops naming a Care Identity: the session is still the card's, and its
    # claims are still those of the card's Care Identity.
    modify_entry(own_slapd, ACCOUNT_DN, {"careidCareIdentityUuid": [(MODIFY_DELETE, [])]})
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    claims = _claims(rp.redeem(silent).get_json()["id_token"])
    assert claims["nhsid_useruid"] == ALEX[1]
    assert claims["acr"] == "AAL3_SMARTCARD"

    # The account now names another Care Identity: the card's session is not the
    # account's any more, as a new card sign-in would find.
    modify_entry(
        own_slapd, ACCOUNT_DN, {"careidCareIdentityUuid": [(MODIFY_REPLACE, ["555000000002"])]}
    )
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    assert query_of(silent.location).get("error") == "login_required", silent.location


def test_a_card_session_ends_when_the_directory_gives_its_care_identity_to_another_account(
    signed_in: tuple[Flask, Browser], own_slapd: Slapd
) -> None:
    app, rp = signed_in
    # Alex's account stops naming a Care Identity: the card's session carries on (above).
    modify_entry(own_slapd, ACCOUNT_DN, {"careidCareIdentityUuid": [(MODIFY_DELETE, [])]})
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    tokens = rp.redeem(silent).get_json()
    assert _claims(tokens["id_token"])["nhsid_useruid"] == ALEX[1]

    # The Registration Authority records the card's Care Identity on another account: the
    # card is that person's now, as a new card sign-in or registration would find.
    modify_entry(own_slapd, LEE_DN, {"careidCareIdentityUuid": [(MODIFY_REPLACE, [ALEX[1]])]})
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    assert query_of(silent.location).get("error") == "login_required", silent.location
    refused = rp.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    ended = last_audit(app, "session.end")
    assert ended.subject == ALEX[0] and ended.details["reason"] == "account_refused"
    assert "card_identity_mismatch" in str(ended.details)


def test_a_card_session_ends_when_its_address_is_given_to_another_entry(
    signed_in: tuple[Flask, Browser], own_slapd: Slapd
) -> None:
    app, rp = signed_in
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    tokens = rp.redeem(silent).get_json()
    # Alex's entry goes; a new entry (another person) is given the address, even naming
    # the same Care Identity: only the entry tells it from the one the card registered.
    give_address_to_new_entry(own_slapd, "alex.morgan", "alex.morgan.new", care_identity=ALEX[1])
    silent = rp.authorize(prompt="none", acr_values="AAL3_ANY")
    assert query_of(silent.location).get("error") == "login_required", silent.location
    refused = rp.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    ended = last_audit(app, "session.end")
    assert ended.subject == ALEX[0] and ended.details["reason"] == "account_refused"
    assert "registration_account_changed" in str(ended.details)
