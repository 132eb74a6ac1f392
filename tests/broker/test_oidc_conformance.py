"""The OpenID Foundation's Basic OP and Config OP checks, as tests (Flask test client).

Each test is named after the certification check it stands for (oidcc-…, or the older
OP-… names); the flows run against the real app: slapd for the password, the store on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from authlib.oidc.discovery import OpenIDProviderMetadata
from broker_support import (
    DEMO_PASSWORD,
    broker_of,
    csrf_token_from,
    error_code_of,
    rp_transaction,
)
from flask import Flask
from flask.testing import FlaskClient
from ldap3 import MODIFY_REPLACE, Connection
from oidc_support import (
    ALEX,
    ISSUER,
    OTHER_SECRET,
    REDIRECT,
    RP_SECRET,
    Browser,
    basic,
    client_assertion,
    id_token_claims,
    make_oidc_app,
    query_of,
)
from sqlalchemy import func, select

from careid_broker.store import MAX_TRANSACTION_ID_LENGTH
from careid_broker.store.models import AuthorizationCode
from careid_devkit.slapd import Slapd
from support.clock import FakeClock


@pytest.fixture
def oidc_app(app_factory: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_oidc_app(app_factory, tmp_path)


@pytest.fixture
def oidc_browser(oidc_app: Flask) -> Browser:
    return Browser(oidc_app.test_client())


def _tokens(oidc_browser: Browser, **params: Any) -> dict[str, Any]:
    authorization = oidc_browser.signed_in_code(**params)
    response = oidc_browser.redeem(authorization)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _userinfo(client: FlaskClient, access_token: str) -> Any:
    return client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


# Discovery (Config OP).


def test_oidcc_discovery_metadata(oidc_browser: Browser) -> None:
    response = oidc_browser.client.get("/.well-known/openid-configuration")
    assert response.status_code == 200 and response.mimetype == "application/json"
    meta = response.get_json()
    OpenIDProviderMetadata(meta).validate()  # authlib's own Discovery 1.0 checks
    assert meta["issuer"] == ISSUER
    for name, path in (
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/logout"),
    ):
        assert meta[name] == ISSUER + path
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True
    assert {"AAL3_SMARTCARD", "AAL1_USERPASS", "AAL3_ANY"} <= set(meta["acr_values_supported"])
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    for claim in ("sub", "acr", "amr", "auth_time", "sid", "nhsid_useruid", "nhsid_nrbac_roles"):
        assert claim in meta["claims_supported"]
    assert {"RS256", "ES256"} <= set(meta["id_token_signing_alg_values_supported"])


def test_oidcc_discovery_jwks_are_public_signing_keys(oidc_browser: Browser) -> None:
    keys = oidc_browser.client.get("/jwks").get_json()["keys"]
    assert keys, "no published keys"
    for key in keys:
        assert key["use"] == "sig" and key["kid"] and key["alg"] in ("RS256", "ES256")
        assert "d" not in key and "p" not in key  # never a private part


# The code flow.


def test_oidcc_server_happy_flow(oidc_browser: Browser) -> None:
    authorization = oidc_browser.signed_in_code()
    params = authorization.params
    assert params["state"] == authorization.state
    assert params["iss"] == ISSUER  # RFC 9207
    response = oidc_browser.redeem(authorization)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["access_token"] and body["refresh_token"]
    header, claims = id_token_claims(oidc_browser.client, body["id_token"])
    assert header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == ISSUER and claims["aud"] == "rp"
    assert claims["nonce"] == authorization.nonce
    assert claims["exp"] - claims["iat"] == 300
    assert claims["acr"] == "AAL1_USERPASS" and claims["amr"] == ["pwd"]
    assert claims["authentication_assurance_level"] == "1"
    assert claims["sid"] and claims["sub"] and "@" not in claims["sub"]
    assert claims["nhsid_useruid"] == "555000000001"
    # A password sign-in carries no roles (AAL1: tests/broker/test_oidc_cis2.py); a
    # card sign-in, next, does.
    assert claims["nhsid_nrbac_roles"] == []
    assert claims["nhsid_user_orgs"] == [{"org_code": "RX1"}]
    oidc_browser.sign_in_by_card()
    by_card = oidc_browser.redeem(oidc_browser.signed_in_code())
    _, card_claims = id_token_claims(oidc_browser.client, by_card.get_json()["id_token"])
    assert card_claims["acr"] == "AAL3_SMARTCARD"
    assert card_claims["nhsid_nrbac_roles"] == [
        {
            "person_roleid": card_claims["nhsid_nrbac_roles"][0]["person_roleid"],
            "org_code": "RX1",
            "role_name": "Clinical Practitioner",
            "role_code": "R8000",
        }
    ]
    assert card_claims["nhsid_user_orgs"] == [{"org_code": "RX1"}]


def test_the_authorization_endpoint_accepts_post(oidc_browser: Browser) -> None:
    authorization = oidc_browser.sign_in(oidc_browser.authorize(method="POST"))
    assert oidc_browser.redeem(authorization).status_code == 200
    # A POST that carries the browser's cookies (the RP's form on the same site) is
    # answered as it came: single sign-on, no detour by GET.
    again = oidc_browser.authorize(method="POST")
    assert again.response.status_code in (302, 303)
    assert again.location.startswith(REDIRECT) and "code" in again.params


def test_oidcc_codereuse_second_redemption_fails_and_revokes(oidc_browser: Browser) -> None:
    authorization = oidc_browser.signed_in_code()
    first = oidc_browser.redeem(authorization)
    assert first.status_code == 200
    access_token = first.get_json()["access_token"]
    assert _userinfo(oidc_browser.client, access_token).status_code == 200

    second = oidc_browser.redeem(authorization)
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    counter = oidc_browser.client.application.extensions["careid"].metrics.tokens
    assert counter.value(grant_type="authorization_code", result="success") == 1
    assert counter.value(grant_type="authorization_code", result="invalid_grant") == 1
    # RFC 6749 §4.1.2: what the code issued is revoked.
    assert _userinfo(oidc_browser.client, access_token).status_code == 401
    refresh = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": first.get_json()["refresh_token"]}
    )
    assert refresh.status_code == 400


def test_oidcc_ensure_registered_redirect_uri_gets_a_page_not_a_redirect(
    oidc_browser: Browser,
) -> None:
    for redirect_uri in ("https://evil.example/cb", REDIRECT + "/", REDIRECT.upper()):
        response = oidc_browser.authorize(redirect_uri=redirect_uri).response
        assert response.status_code == 400 and "Location" not in response.headers
        assert error_code_of(response) == "oidc_request_invalid"


def test_oidcc_ensure_redirect_uri_is_required(oidc_browser: Browser) -> None:
    response = oidc_browser.authorize(redirect_uri=None).response
    assert response.status_code == 400 and "Location" not in response.headers
    assert error_code_of(response) == "oidc_request_invalid"


def test_an_unknown_client_gets_a_page_not_a_redirect(oidc_browser: Browser) -> None:
    oidc_browser.client_id = "nobody"
    response = oidc_browser.authorize().response
    assert response.status_code == 400 and "Location" not in response.headers


def test_oidcc_prompt_none_not_logged_in_is_login_required(oidc_browser: Browser) -> None:
    authorization = oidc_browser.authorize(prompt="none")
    assert authorization.response.status_code == 302
    assert authorization.location.startswith(REDIRECT)
    params = authorization.params
    assert params["error"] == "login_required"
    assert params["state"] == authorization.state and params["iss"] == ISSUER


@pytest.mark.parametrize(
    ("parameter", "error"),
    [("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")],
)
def test_a_request_object_is_refused_not_ignored(
    oidc_app: Flask, oidc_browser: Browser, parameter: str, error: str
) -> None:
    # A request object could carry acr_values demanding a card: ignoring it would sign
    # the person in by password as if the RP had not asked (OIDC Core §6.1, §6.2).
    value = "eyJhbGciOiJub25lIn0.eyJhY3JfdmFsdWVzIjoiQUFMM19BTlkifQ."
    if parameter == "request_uri":
        value = "https://rp.example.test/request.jwt"
    authorization = oidc_browser.authorize(**{parameter: value})
    assert authorization.response.status_code == 302
    assert authorization.location.startswith(REDIRECT)
    params = authorization.params
    assert params["error"] == error
    assert params["state"] == authorization.state and params["iss"] == ISSUER
    entry = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize", limit=1)[0]
    assert entry.outcome == "failure" and entry.details["error"] == error


def test_oidcc_prompt_none_logged_in_returns_a_code(oidc_browser: Browser) -> None:
    first = oidc_browser.signed_in_code()
    _, first_claims = id_token_claims(
        oidc_browser.client, oidc_browser.redeem(first).get_json()["id_token"]
    )
    again = oidc_browser.authorize(prompt="none")
    assert again.response.status_code == 302 and "code" in again.params
    assert again.params["iss"] == ISSUER
    _, claims = id_token_claims(
        oidc_browser.client, oidc_browser.redeem(again).get_json()["id_token"]
    )
    # Single sign-on: same person, same session, same sign-in time.
    assert claims["sub"] == first_claims["sub"] and claims["sid"] == first_claims["sid"]
    assert claims["auth_time"] == first_claims["auth_time"]


def test_oidcc_prompt_login_reauthenticates_with_a_later_auth_time(
    oidc_browser: Browser, clock: FakeClock
) -> None:
    first = _tokens(oidc_browser)
    _, first_claims = id_token_claims(oidc_browser.client, first["id_token"])
    clock.advance(timedelta(seconds=5))
    authorization = oidc_browser.authorize(prompt="login")
    assert authorization.location.startswith("/login?"), "prompt=login must ask again"
    result = oidc_browser.sign_in(authorization)
    _, claims = id_token_claims(
        oidc_browser.client, oidc_browser.redeem(result).get_json()["id_token"]
    )
    assert claims["auth_time"] >= first_claims["auth_time"] + 5
    assert claims["sub"] == first_claims["sub"]


def test_prompt_select_account_signs_in_afresh_as_login_does(
    oidc_browser: Browser, clock: FakeClock
) -> None:
    # At a shared workstation the account is chosen by signing in again: whoever is
    # at the keyboard, not whoever signed in last.
    first = _tokens(oidc_browser)
    _, first_claims = id_token_claims(oidc_browser.client, first["id_token"])
    clock.advance(timedelta(seconds=5))
    authorization = oidc_browser.authorize(prompt="select_account")
    assert authorization.location.startswith("/login?"), "select_account must ask again"
    result = oidc_browser.sign_in(authorization, mail="kim.taylor@nhs.net")
    _, claims = id_token_claims(
        oidc_browser.client, oidc_browser.redeem(result).get_json()["id_token"]
    )
    assert claims["sub"] != first_claims["sub"]
    assert claims["auth_time"] >= first_claims["auth_time"] + 5
    # With none it is a contradiction, as prompt=none login is.
    silent = oidc_browser.authorize(prompt="none select_account")
    assert silent.params["error"] == "invalid_request"


def test_prompt_consent_is_met_by_the_trusts_registration_of_the_rp(
    oidc_browser: Browser,
) -> None:
    # No consent page: the trust registering the RP is the consent (as CIS2's terms of
    # use are), so an RP that always asks for consent still gets single sign-on.
    oidc_browser.signed_in_code()
    again = oidc_browser.authorize(prompt="consent")
    assert again.response.status_code == 302 and "code" in again.params
    assert again.params["state"] == again.state
    assert oidc_browser.redeem(again).status_code == 200
    meta = oidc_browser.client.get("/.well-known/openid-configuration").get_json()
    assert meta["prompt_values_supported"] == ["none", "login", "consent", "select_account"]


def test_oidcc_max_age_1_reauthenticates(oidc_browser: Browser, clock: FakeClock) -> None:
    first = _tokens(oidc_browser)
    _, first_claims = id_token_claims(oidc_browser.client, first["id_token"])
    clock.advance(timedelta(seconds=2))
    authorization = oidc_browser.authorize(max_age="1")
    assert authorization.location.startswith("/login?")
    result = oidc_browser.sign_in(authorization)
    _, claims = id_token_claims(
        oidc_browser.client, oidc_browser.redeem(result).get_json()["id_token"]
    )
    assert claims["auth_time"] > first_claims["auth_time"]


def test_max_age_not_passed_reuses_the_sign_in(oidc_browser: Browser, clock: FakeClock) -> None:
    _tokens(oidc_browser)
    clock.advance(timedelta(seconds=30))
    again = oidc_browser.authorize(max_age="3600")
    assert again.response.status_code == 302 and "code" in again.params


def test_oidcc_userinfo_get_and_post(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser)
    access_token = tokens["access_token"]
    _, claims = id_token_claims(oidc_browser.client, tokens["id_token"])
    by_header = _userinfo(oidc_browser.client, access_token)
    by_post_header = oidc_browser.client.post(
        "/userinfo", headers={"Authorization": f"Bearer {access_token}"}
    )
    by_body = oidc_browser.client.post("/userinfo", data={"access_token": access_token})
    for response in (by_header, by_post_header, by_body):
        assert response.status_code == 200, response.get_data(as_text=True)
        info = response.get_json()
        assert info["sub"] == claims["sub"]
        assert info["email"] == ALEX and info["nhsid_useruid"] == "555000000001"
        assert info["nhsid_nrbac_roles"] == []  # a password sign-in: no roles
    unauthenticated = oidc_browser.client.get("/userinfo")
    assert unauthenticated.status_code == 401
    bad = _userinfo(oidc_browser.client, "not-a-token")
    assert bad.status_code == 401 and "invalid_token" in bad.headers["WWW-Authenticate"]


def test_oidcc_scope_order_is_irrelevant_and_scopes_limit_claims(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser, scope="email openid")
    assert tokens["scope"] == "email openid"
    _, claims = id_token_claims(oidc_browser.client, tokens["id_token"])
    assert claims["email"] == ALEX
    for withheld in ("name", "nhsid_useruid", "nhsid_nrbac_roles", "nhsid_user_orgs"):
        assert withheld not in claims
    info = _userinfo(oidc_browser.client, tokens["access_token"]).get_json()
    assert set(info) == {"sub", "email", "email_verified"}


def test_unknown_scope_values_are_ignored_but_openid_is_required(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser, scope="openid phone made-up")
    assert tokens["scope"] == "openid"
    refused = oidc_browser.authorize(scope="profile email")
    assert refused.params["error"] == "invalid_scope" and refused.params["iss"] == ISSUER


def test_oidcc_client_secret_post(oidc_browser: Browser) -> None:
    authorization = oidc_browser.signed_in_code()
    response = oidc_browser.redeem(authorization, auth="post")
    assert response.status_code == 200 and response.get_json()["id_token"]


def test_client_secret_basic_with_a_wrong_secret_is_invalid_client(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    authorization = oidc_browser.signed_in_code()
    response = oidc_browser.redeem(authorization, secret="wrong-secret-wrong-secret")
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    # Audited, with the client id it claimed (not trusted: it failed to authenticate).
    entry = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.token", limit=1)[0]
    assert entry.outcome == "failure" and entry.error_code == "oidc_token_refused"
    assert entry.details["reason"] == "invalid_client"
    assert entry.details["client_id_claimed"] == "rp" and entry.relying_party is None
    # The code was not spent by a client that failed to authenticate.
    assert oidc_browser.redeem(authorization).status_code == 200


def test_a_client_only_uses_its_registered_auth_method(oidc_app: Flask) -> None:
    other = Browser(
        oidc_app.test_client(), client_id="other", redirect_uri="https://other.example.test/cb"
    )
    authorization = other.signed_in_code()
    refused = other.redeem(authorization, auth="basic", secret=OTHER_SECRET)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"
    assert other.redeem(authorization, auth="post", secret=OTHER_SECRET).status_code == 200


def test_private_key_jwt_with_an_es256_id_token(oidc_app: Flask) -> None:
    jwt_rp = Browser(oidc_app.test_client(), client_id="jwtrp")
    authorization = jwt_rp.signed_in_code()
    response = jwt_rp.redeem(authorization, auth="jwt")
    assert response.status_code == 200, response.get_data(as_text=True)
    header, claims = id_token_claims(jwt_rp.client, response.get_json()["id_token"])
    assert header["alg"] == "ES256" and claims["aud"] == "jwtrp"
    published = {k["kid"]: k["alg"] for k in jwt_rp.client.get("/jwks").get_json()["keys"]}
    assert published[header["kid"]] == "ES256"


def test_private_key_jwt_assertions_are_single_use_and_checked(oidc_app: Flask) -> None:
    jwt_rp = Browser(oidc_app.test_client(), client_id="jwtrp")
    authorization = jwt_rp.signed_in_code()
    base = {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": REDIRECT,
        "code_verifier": authorization.verifier,
    }
    replayed = client_assertion(jti="same-jti-twice")
    wrong_audience = client_assertion(audience="https://someone-else.example/token")
    too_long = client_assertion(lifetime=3600)
    assert jwt_rp.client.post("/token", data={**base, **wrong_audience}).status_code in (400, 401)
    assert jwt_rp.client.post("/token", data={**base, **too_long}).status_code in (400, 401)
    first = jwt_rp.client.post("/token", data={**base, **replayed})
    assert first.status_code == 200, first.get_data(as_text=True)
    again = jwt_rp.client.post("/token", data={**base, **replayed})
    assert again.status_code in (400, 401) and again.get_json()["error"] == "invalid_client"


def test_oidcc_request_without_nonce_has_no_nonce_claim(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser, nonce=None)
    _, claims = id_token_claims(oidc_browser.client, tokens["id_token"])
    assert "nonce" not in claims  # absent, never null


def test_oidcc_display_login_hint_ui_locales_and_unknown_parameters_are_tolerated(
    oidc_browser: Browser,
) -> None:
    authorization = oidc_browser.authorize(
        display="page", login_hint=ALEX, ui_locales="en-GB cy", claims_locales="en", foo="bar"
    )
    login_page = oidc_browser.client.get(authorization.location)
    assert login_page.status_code == 200
    assert ALEX in login_page.get_data(as_text=True)  # the hint fills in the email address
    result = oidc_browser.sign_in(authorization)
    assert oidc_browser.redeem(result).status_code == 200


def test_an_unsupported_response_type_is_returned_to_the_client(oidc_browser: Browser) -> None:
    authorization = oidc_browser.authorize(response_type="token")
    assert authorization.location.startswith(REDIRECT)
    assert authorization.params["error"] == "unsupported_response_type"
    assert authorization.params["iss"] == ISSUER
    assert authorization.params["state"] == authorization.state


@pytest.mark.parametrize(("name", "limit"), [("state", 1024), ("nonce", 512), ("acr_values", 255)])
def test_an_over_long_parameter_is_refused_not_cut(
    oidc_browser: Browser, name: str, limit: int
) -> None:
    # The login transaction keeps the request whole, sealed into its id: a value longer
    # than the broker keeps is refused to the RP, with a message that names it.
    authorization = oidc_browser.authorize(**{name: "x" * (limit + 1)})
    assert authorization.location.startswith(REDIRECT)
    assert authorization.params["error"] == "invalid_request"
    assert authorization.params["error_description"] == (
        f"{name} is longer than {limit} characters."
    )


def test_a_request_too_large_to_seal_is_refused_to_the_rp(oidc_browser: Browser) -> None:
    # Each value within its limit, but characters of four UTF-8 bytes each make the
    # sealed id too long for a URL: refused with a reason, not a 500.
    authorization = oidc_browser.authorize(state="\U0001f600" * 1024, nonce="\U0001f600" * 512)
    assert authorization.location.startswith(REDIRECT)
    assert authorization.params["error"] == "invalid_request"
    assert authorization.params["error_description"] == "The authorization request is too large."
    assert authorization.params["state"] == "\U0001f600" * 1024


def test_the_largest_request_kept_still_signs_in(oidc_app: Flask, oidc_browser: Browser) -> None:
    # The free-text parameters an RP chooses, at their limits (its redirect URI and
    # scope are bounded by its registration): the sealed id still fits the URLs and
    # forms the sign-in passes it through (gunicorn takes request lines up to 8190
    # bytes), and an over-long UI hint is dropped rather than refused.
    authorization = oidc_browser.authorize(
        state="s" * 1024,
        nonce="n" * 512,
        acr_values=("AAL1_USERPASS " * 19)[:255].strip(),
        login_hint="h" * 257,
        ui_locales="u" * 256,
        display="d" * 256,
    )
    tx = query_of(authorization.location)["tx"]
    assert len(tx) <= MAX_TRANSACTION_ID_LENGTH and len(authorization.location) < 8000
    request = broker_of(oidc_app).repos.transactions.get(tx).request
    assert request.state == "s" * 1024 and "login_hint" not in request.extras
    assert request.extras["ui_locales"] == "u" * 256
    result = oidc_browser.sign_in(authorization)
    assert result.params["state"] == "s" * 1024
    tokens = oidc_browser.redeem(result)
    assert tokens.status_code == 200


def test_a_transaction_sealed_for_an_unregistered_redirect_uri_gets_no_code(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    # Whoever held `secret_key` could seal any request without /authorize's checks.
    # Finishing a transaction checks the request against the client's registration
    # again, so no code goes to a redirect URI the relying party did not register.
    client = oidc_browser.client
    forged = rp_transaction(
        oidc_app, client, client_id="rp", redirect_uri="https://attacker.example/cb"
    )
    posted = _password_signin(client, forged)
    assert "attacker.example" not in posted.headers.get("Location", "")
    assert posted.status_code == 400
    with broker_of(oidc_app).store.session() as session:
        assert session.scalar(select(func.count()).select_from(AuthorizationCode)) == 0
    # The same, sealed for the registered URI, goes on to a code.
    legit = rp_transaction(oidc_app, client, client_id="rp", redirect_uri=REDIRECT)
    posted = _password_signin(client, legit)
    assert posted.status_code == 303 and posted.headers["Location"].startswith(REDIRECT)


def _password_signin(client: FlaskClient, tx: str) -> Any:
    """The login page for `tx`, then its password form: the form's answer."""
    page = client.get("/login", query_string={"tx": tx})
    form = {
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        "tx": tx,
        "email": ALEX,
        "password": DEMO_PASSWORD,
    }
    return client.post("/login", data=form)


# The login hand-off (/login?tx=… and back to /authorize/resume?tx=…).


def test_a_login_transaction_cannot_be_finished_in_another_browser(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    # Someone learns the id of a transaction a colleague's browser started and tries to
    # sign in to it as themselves: the code, with the colleague's state and PKCE
    # challenge, would sign the colleague's browser in to the RP as them.
    tx = query_of(oidc_browser.authorize().location)["tx"]
    other = Browser(oidc_app.test_client())
    other.signed_in_code(ALEX)  # signed in at the broker in their own right
    shown = other.client.get("/login", query_string={"tx": tx})
    assert shown.status_code == 400 and error_code_of(shown) == "oidc_signin_expired"
    csrf = csrf_token_from(other.client.get("/signout").get_data(as_text=True))
    posted = other.client.post(
        "/login",
        data={"csrf_token": csrf, "tx": tx, "email": ALEX, "password": DEMO_PASSWORD},
    )
    assert posted.status_code == 400 and error_code_of(posted) == "oidc_signin_expired"
    resumed = other.client.get("/authorize/resume", query_string={"tx": tx})
    assert resumed.status_code == 400 and error_code_of(resumed) == "oidc_signin_expired"
    refusal = _last(oidc_app, "oidc.authorize")
    assert refusal.error_code == "oidc_signin_expired" and refusal.relying_party == "rp"
    assert refusal.details["detail"] == "the login transaction was not started in this browser"
    # The browser that started it is not held up by any of that.
    assert broker_of(oidc_app).repos.transactions.get(tx).status.value == "pending"


def test_resume_needs_a_live_pending_transaction(oidc_browser: Browser) -> None:
    unknown = oidc_browser.client.get(
        "/authorize/resume", query_string={"tx": "no-such-transaction"}
    )
    assert unknown.status_code == 400 and error_code_of(unknown) == "oidc_signin_expired"
    authorization = oidc_browser.authorize()
    tx = query_of(authorization.location)["tx"]
    # Not signed in yet: back to the sign-in page, nothing issued.
    early = oidc_browser.client.get("/authorize/resume", query_string={"tx": tx})
    assert early.status_code == 302 and early.headers["Location"].startswith("/login?")
    done = oidc_browser.sign_in(authorization)
    assert "code" in done.params
    # A transaction completes once: a replayed resume issues no second code.
    replayed = oidc_browser.client.get("/authorize/resume", query_string={"tx": tx})
    assert replayed.status_code == 400 and error_code_of(replayed) == "oidc_signin_expired"


def test_a_login_transaction_expires(oidc_browser: Browser, clock: FakeClock) -> None:
    authorization = oidc_browser.authorize()
    clock.advance(timedelta(minutes=16))
    tx = query_of(authorization.location)["tx"]
    expired = oidc_browser.client.get("/authorize/resume", query_string={"tx": tx})
    assert expired.status_code == 400 and error_code_of(expired) == "oidc_signin_expired"


# PKCE (RFC 7636 and the Security BCP, RFC 9700 §2.1.1).


def test_pkce_is_required(oidc_browser: Browser) -> None:
    authorization = oidc_browser.authorize(pkce=False)
    assert authorization.params["error"] == "invalid_request"
    assert authorization.params["iss"] == ISSUER
    assert authorization.params["state"] == authorization.state


def test_pkce_plain_and_a_missing_method_are_refused(oidc_browser: Browser) -> None:
    plain = oidc_browser.authorize(code_challenge_method="plain")
    assert plain.params["error"] == "invalid_request"
    no_method = oidc_browser.authorize(code_challenge_method=None)
    assert no_method.params["error"] == "invalid_request"


def test_pkce_a_wrong_or_missing_verifier_fails(oidc_browser: Browser) -> None:
    authorization = oidc_browser.signed_in_code()
    wrong = oidc_browser.redeem(authorization, code_verifier="x" * 50)
    assert wrong.status_code == 400 and wrong.get_json()["error"] == "invalid_grant"
    # A failed exchange burns the code: it may have been stolen.
    assert oidc_browser.redeem(authorization).status_code == 400
    missing = oidc_browser.redeem(oidc_browser.signed_in_code(), code_verifier=None)
    assert missing.status_code == 400 and missing.get_json()["error"] == "invalid_request"


def test_a_confidential_client_may_opt_out_of_pkce(oidc_app: Flask) -> None:
    nopkce = Browser(oidc_app.test_client(), client_id="nopkce")
    authorization = nopkce.signed_in_code(pkce=False)
    assert nopkce.redeem(authorization).status_code == 200


def test_a_verifier_without_a_challenge_is_refused(oidc_app: Flask) -> None:
    nopkce = Browser(oidc_app.test_client(), client_id="nopkce")
    authorization = nopkce.signed_in_code(pkce=False)
    response = nopkce.redeem(authorization, code_verifier="v" * 50)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_a_public_client_uses_pkce_without_a_secret(oidc_app: Flask) -> None:
    public = Browser(
        oidc_app.test_client(), client_id="public", redirect_uri="http://127.0.0.1:8765/cb"
    )
    authorization = public.signed_in_code()
    assert public.redeem(authorization, auth="none").status_code == 200


# Codes are bound to client, redirect URI and time.


def test_a_code_is_bound_to_its_client_and_redirect_uri(oidc_app: Flask) -> None:
    rp = Browser(oidc_app.test_client())
    authorization = rp.signed_in_code()
    stolen = rp.client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": authorization.code,
            "redirect_uri": REDIRECT,
            "code_verifier": authorization.verifier,
            "client_id": "other",
            "client_secret": OTHER_SECRET,
        },
    )
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "invalid_grant"
    second = rp.signed_in_code()
    moved = rp.redeem(second, redirect_uri="https://rp.example.test/other")
    assert moved.status_code == 400 and moved.get_json()["error"] == "invalid_grant"
    # A failed exchange burns the code: a stolen code gets one try, not one per guess.
    again = rp.redeem(second)
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    wrong_verifier = rp.signed_in_code()
    guessed = rp.redeem(wrong_verifier, code_verifier="x" * 64)
    assert guessed.status_code == 400 and guessed.get_json()["error"] == "invalid_grant"
    assert rp.redeem(wrong_verifier).get_json()["error"] == "invalid_grant"


def test_a_code_expires_after_60_seconds(oidc_browser: Browser, clock: FakeClock) -> None:
    authorization = oidc_browser.signed_in_code()
    clock.advance(timedelta(seconds=61))
    response = oidc_browser.redeem(authorization)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_a_code_is_worthless_once_its_session_has_ended(oidc_browser: Browser) -> None:
    authorization = oidc_browser.signed_in_code()
    page = oidc_browser.client.get("/signout").get_data(as_text=True)
    oidc_browser.client.post("/signout", data={"csrf_token": csrf_token_from(page)})
    response = oidc_browser.redeem(authorization)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


# Assurance.


def test_a_password_session_never_satisfies_aal3_any(oidc_browser: Browser) -> None:
    _tokens(oidc_browser)
    authorization = oidc_browser.authorize(acr_values="AAL3_ANY")
    location = authorization.location
    assert location.startswith("/login?") and query_of(location)["card"] == "required"
    # prompt=none cannot show the card page: the RP is told at once.
    silent = oidc_browser.authorize(acr_values="AAL3_ANY", prompt="none")
    assert silent.params["error"] == "login_required"


@pytest.mark.parametrize("acr_values", ["aal3_any", "AAL3", "urn:nhs:aal3 AAL3-ANY"])
def test_acr_values_naming_nothing_the_broker_knows_are_refused_not_met_by_a_password(
    oidc_app: Flask, oidc_browser: Browser, acr_values: str
) -> None:
    # Read as "nothing asked", a misspelt AAL3_ANY would be met by the weakest sign-in.
    _tokens(oidc_browser)
    for params in ({}, {"prompt": "none"}):
        refused = oidc_browser.authorize(acr_values=acr_values, **params)
        assert refused.location.startswith(REDIRECT), refused.location
        assert "code" not in refused.params
        assert refused.params["error"] == "invalid_request"
        assert refused.params["state"] == refused.state
        description = refused.params["error_description"]
        assert "AAL3_ANY" in description and "AAL2_OR_AAL3_ANY" in description
    entries = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize")
    assert entries[0].error_code == "oidc_acr_unsupported"
    assert entries[0].outcome.value == "failure"
    # A value it knows beside one it does not: met by the one it knows.
    mixed = oidc_browser.authorize(acr_values=f"{acr_values} AAL3_ANY")
    assert mixed.location.startswith("/login?") and query_of(mixed.location)["card"] == "required"


def test_a_claims_parameter_asking_for_an_essential_acr_is_refused(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    # Discovery says claims_parameter_supported: false, so an essential acr asked there
    # cannot be honoured, and OIDC Core §5.5.1.1 makes that a failed authentication.
    assert (
        oidc_browser.client.get("/.well-known/openid-configuration").get_json()[
            "claims_parameter_supported"
        ]
        is False
    )
    _tokens(oidc_browser)
    essential = {"essential": True, "values": ["AAL3_ANY"]}
    for claims in (
        {"id_token": {"acr": essential}},
        {"userinfo": {"acr": {"essential": True, "value": "AAL3_ANY"}}},
        {"id_token": {"acr": {"essential": True}}},
    ):
        refused = oidc_browser.authorize(claims=json.dumps(claims))
        assert "code" not in refused.params, claims
        assert refused.params["error"] == "invalid_request", claims
        assert "acr_values" in refused.params["error_description"]
    entries = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize")
    assert entries[0].error_code == "oidc_acr_unsupported"
    # One that is not JSON might be asking for anything: refused too, as not valid.
    malformed = oidc_browser.authorize(claims="{not json")
    assert malformed.params["error"] == "invalid_request" and "code" not in malformed.params
    # Claims asked for by name only, or an acr that is voluntary: ignored, as before.
    for claims in (
        {"userinfo": {"email": None}},
        {"id_token": {"acr": {"values": ["AAL3_ANY"]}}},
    ):
        ignored = oidc_browser.authorize(claims=json.dumps(claims))
        assert "code" in ignored.params, (claims, ignored.location)


def test_acr_values_a_password_meets_are_served_from_the_session(oidc_browser: Browser) -> None:
    _tokens(oidc_browser)
    again = oidc_browser.authorize(acr_values="AAL1_USERPASS", prompt="none")
    _, claims = id_token_claims(
        oidc_browser.client, oidc_browser.redeem(again).get_json()["id_token"]
    )
    assert claims["acr"] == "AAL1_USERPASS"


def test_id_token_hint_for_another_user_is_not_served_silently(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser)
    same = oidc_browser.authorize(prompt="none", id_token_hint=tokens["id_token"])
    assert "code" in same.params
    other = Browser(oidc_browser.client.application.test_client())
    other_tokens = _tokens(other, mail="kim.taylor@nhs.net")
    mismatch = oidc_browser.authorize(prompt="none", id_token_hint=other_tokens["id_token"])
    assert mismatch.params["error"] == "login_required"
    forged = oidc_browser.authorize(prompt="none", id_token_hint="e30.e30.sig")
    assert forged.params["error"] == "invalid_request"


def test_id_token_hint_for_another_user_is_login_required_after_the_sign_in(
    oidc_app: Flask,
) -> None:
    # OIDC Core §3.1.2.1: the RP asks for the person its ID token names; someone else
    # signing in at the login page must not get the RP an ID token for themselves.
    kim = Browser(oidc_app.test_client())
    kim_token = _tokens(kim, mail="kim.taylor@nhs.net")["id_token"]
    kim_sub = id_token_claims(kim.client, kim_token)[1]["sub"]
    browser = Browser(oidc_app.test_client())
    asked = browser.authorize(id_token_hint=kim_token)
    answered = browser.sign_in(asked, ALEX)
    assert answered.location.startswith(REDIRECT)
    params = answered.params
    assert "code" not in params and params["error"] == "login_required"
    assert "not the one" in params["error_description"]
    assert params["state"] == asked.state and params["iss"] == ISSUER
    entry = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize", limit=1)[0]
    assert entry.outcome == "failure" and entry.details["error"] == "login_required"
    assert entry.subject == ALEX
    # The request is answered: the same transaction gives no code afterwards either.
    again = browser.client.get(f"/authorize/resume?tx={query_of(asked.location)['tx']}")
    assert again.status_code == 400 and "code=" not in again.headers.get("Location", "")
    # The person the hint names signs in to a code for themselves.
    fresh = Browser(oidc_app.test_client())
    signed_in = fresh.sign_in(fresh.authorize(id_token_hint=kim_token), "kim.taylor@nhs.net")
    claims = id_token_claims(fresh.client, fresh.redeem(signed_in).get_json()["id_token"])[1]
    assert claims["sub"] == kim_sub


def test_id_token_hint_for_another_user_is_not_served_on_resume(oidc_app: Flask) -> None:
    # A session of someone else's, taken straight to the resume step of a transaction
    # whose hint names another person, issues no code either.
    kim = Browser(oidc_app.test_client())
    kim_token = _tokens(kim, mail="kim.taylor@nhs.net")["id_token"]
    browser = Browser(oidc_app.test_client())
    _tokens(browser)  # Alex is signed in here
    asked = browser.authorize(id_token_hint=kim_token)
    tx = query_of(asked.location)["tx"]
    resumed = browser.client.get(f"/authorize/resume?tx={tx}")
    assert resumed.status_code == 302
    params = query_of(resumed.headers["Location"])
    assert "code" not in params and params["error"] == "login_required"
    assert params["state"] == asked.state


def test_a_directory_outage_is_temporarily_unavailable_for_prompt_none(
    app_factory: Callable[..., Flask], tmp_path: Path, own_slapd: Slapd
) -> None:
    app = make_oidc_app(app_factory, tmp_path, directory_slapd=own_slapd)
    oidc_browser = Browser(app.test_client())
    _tokens(oidc_browser)
    own_slapd.stop()
    silent = oidc_browser.authorize(prompt="none")
    assert silent.params["error"] == "temporarily_unavailable"
    assert silent.params["iss"] == ISSUER and silent.params["state"] == silent.state
    # With a person at the screen, the broker says so itself and fails closed.
    shown = oidc_browser.authorize().response
    assert shown.status_code == 503 and error_code_of(shown) == "directory_unavailable"


# Refresh tokens and revocation.


def test_refresh_tokens_rotate_and_a_replay_revokes_the_family(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser)
    first = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert first.status_code == 200, first.get_data(as_text=True)
    rotated = first.get_json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert _userinfo(oidc_browser.client, rotated["access_token"]).status_code == 200

    replay = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    # Two holders of one refresh token: every token of the grant is revoked.
    assert _userinfo(oidc_browser.client, rotated["access_token"]).status_code == 401
    after = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}
    )
    assert after.status_code == 400


def test_a_refresh_token_presented_by_another_client_revokes_its_grant(
    oidc_browser: Browser,
) -> None:
    tokens = _tokens(oidc_browser)
    stolen = oidc_browser.client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "other",
            "client_secret": OTHER_SECRET,
        },
    )
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "invalid_grant"
    assert _userinfo(oidc_browser.client, tokens["access_token"]).status_code == 401
    own = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert own.status_code == 400


def _refresh(browser: Browser, refresh_token: str) -> Any:
    return browser.token({"grant_type": "refresh_token", "refresh_token": refresh_token})


def _last(app: Flask, event: str) -> Any:
    [entry] = broker_of(app).repos.audit.list_recent(event_prefix=event, limit=1)
    return entry


def test_a_refresh_token_dies_with_an_idle_sign_in(
    oidc_app: Flask, oidc_browser: Browser, clock: FakeClock
) -> None:
    tokens = _tokens(oidc_browser)
    # The person walked away: no page of the broker's is asked for past the idle limit
    # (2 hours by default), while the RP keeps refreshing.
    clock.advance(timedelta(minutes=50))
    fresh = _refresh(oidc_browser, tokens["refresh_token"])
    assert fresh.status_code == 200, fresh.get_data(as_text=True)
    clock.advance(timedelta(minutes=71))
    refused = _refresh(oidc_browser, fresh.get_json()["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    # Ended here, as its browser would have found it: the end audited, the RPs told.
    ended = _last(oidc_app, "session.end")
    assert ended.details["reason"] == "expired" and ended.details["relying_parties"] == ["rp"]
    refusal = _last(oidc_app, "oidc.refresh_token")
    assert refusal.error_code == "oidc_token_refused"
    assert refusal.details["reason"] == "refresh_session_ended"
    assert not broker_of(oidc_app).repos.sessions.active_for_account(ended.subject)


def test_a_refresh_token_never_outlives_its_sign_in(
    app_factory: Callable[..., Flask], tmp_path: Path, clock: FakeClock
) -> None:
    app = make_oidc_app(
        app_factory,
        tmp_path,
        broker={"session_lifetime_seconds": 3600, "session_idle_seconds": 1800},
    )
    browser = Browser(app.test_client())
    refresh_token = _tokens(browser)["refresh_token"]
    for _ in range(3):  # busy all along: the browser and the RP both keep coming back
        clock.advance(timedelta(minutes=19))
        assert "You are signed in" in browser.client.get("/login").get_data(as_text=True)
        answer = _refresh(browser, refresh_token)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        refresh_token = answer.get_json()["refresh_token"]
    clock.advance(timedelta(minutes=4))  # 61 minutes after the sign-in
    refused = _refresh(browser, refresh_token)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    assert _last(app, "session.end").details["reason"] == "expired"


def test_a_refresh_token_stops_when_the_directory_stops_the_account(
    app_factory: Callable[..., Flask], tmp_path: Path, own_slapd: Slapd
) -> None:
    app = make_oidc_app(app_factory, tmp_path, directory_slapd=own_slapd)
    alex, lee = Browser(app.test_client()), Browser(app.test_client())
    alex_tokens = _tokens(alex)
    lee_refresh = lee.redeem(lee.signed_in_code("lee.admin@nhs.net")).get_json()["refresh_token"]
    # The directory cannot be read: no answer, no refresh, and nothing ended.
    own_slapd.stop()
    try:
        down = _refresh(lee, lee_refresh)
        assert down.status_code == 503 and down.get_json()["error"] == "temporarily_unavailable"
        assert down.get_json()["careid_error"] == "directory_unavailable"
        refused = _last(app, "oidc.token")
        assert refused.error_code == "oidc_token_refused"
        assert refused.details["reason"] == "directory_unavailable"
    finally:
        own_slapd.start()
    assert _refresh(lee, lee_refresh).status_code == 200
    # Alex's account is disabled in the directory: the RP's next refresh ends the sign-in.
    admin = Connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password, auto_bind=True)
    try:
        assert admin.modify(
            "uid=alex.morgan,ou=people,dc=nhs,dc=example",
            {"careidAccountStatus": [(MODIFY_REPLACE, ["disabled"])]},
        )
    finally:
        admin.unbind()
    refused = _refresh(alex, alex_tokens["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    ended = _last(app, "session.end")
    assert ended.subject == ALEX and ended.details["reason"] == "account_refused"
    assert "account_disabled" in ended.details["why"]
    assert not broker_of(app).repos.sessions.active_for_account(ALEX)


def test_a_refresh_token_of_an_ended_sign_in_is_refused(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    tokens = _tokens(oidc_browser)
    page = oidc_browser.client.get("/signout").get_data(as_text=True)
    signed_out = oidc_browser.client.post("/signout", data={"csrf_token": csrf_token_from(page)})
    assert signed_out.status_code == 200
    refused = _refresh(oidc_browser, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"


def test_a_refresh_may_narrow_but_not_widen_the_scope(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser, scope="openid email")
    wider = oidc_browser.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "openid profile",
        }
    )
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_scope"
    narrower = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid"}
    )
    assert narrower.status_code == 200 and narrower.get_json()["scope"] == "openid"


def test_revocation_of_a_refresh_token_revokes_its_grant(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser)
    response = oidc_browser.client.post(
        "/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic("rp", RP_SECRET),
    )
    assert response.status_code == 200
    assert _userinfo(oidc_browser.client, tokens["access_token"]).status_code == 401
    refresh = oidc_browser.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refresh.status_code == 400
    # RFC 7009 §2.2: an unknown (or already revoked) token is still a 200.
    again = oidc_browser.client.post(
        "/revoke", data={"token": "unknown-token"}, headers=basic("rp", RP_SECRET)
    )
    assert again.status_code == 200


def test_revocation_needs_the_owning_client(oidc_browser: Browser) -> None:
    tokens = _tokens(oidc_browser)
    foreign = oidc_browser.client.post(
        "/revoke",
        data={"token": tokens["access_token"], "client_id": "other", "client_secret": OTHER_SECRET},
    )
    assert foreign.status_code == 400
    assert _userinfo(oidc_browser.client, tokens["access_token"]).status_code == 200
    unauthenticated = oidc_browser.client.post("/revoke", data={"token": tokens["access_token"]})
    assert unauthenticated.status_code in (400, 401)
    own = oidc_browser.client.post(
        "/revoke", data={"token": tokens["access_token"]}, headers=basic("rp", RP_SECRET)
    )
    assert own.status_code == 200
    assert _userinfo(oidc_browser.client, tokens["access_token"]).status_code == 401
