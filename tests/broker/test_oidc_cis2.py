"""What relying parties written for NHS CIS2 Authentication rely on.

client_secret_jwt (RFC 7523) beside private_key_jwt, per-deployment allowed methods,
CIS2's scopes (`nhsperson`, `selectedrole`) and the role page, and CIS2's `acr_values`
names with step-up. The card side of `card_removal` is in tests/card/test_card_lock.py;
an RP configured as a CIS2 integration guide says signs in by card in Chromium in
tests/e2e/test_e2e_cis2_rp.py.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of, csrf_token_from, error_code_of, install_test_signin
from flask import Flask
from oidc_support import (
    JWT_CLIENT_KEY,
    JWT_SECRET,
    REDIRECT,
    Authorization,
    Browser,
    client_assertion,
    id_token_claims,
    make_oidc_app,
    query_of,
    write_test_clients,
)

from careid_broker.oidc.client_auth import (
    JWKS_CACHE_SECONDS,
    JWKS_STALE_IF_ERROR_SECONDS,
    ClientKeyResolver,
)
from careid_broker.oidc.clients import AuthMethod, CardRemoval, load_clients
from careid_broker.oidc.config import OidcConfig
from careid_broker.oidc.errors import ClientKeysUnavailableError, OidcConfigError
from careid_broker.oidc.models import OAuthClient
from support.clock import FakeClock

AppFactory = Callable[..., Flask]
ROBIN = "robin.hale@nhs.net"  # a locum: three roles in three organisations
CASEY = "casey.doyle@nhs.net"  # a GP in two practices
ALEX = "alex.morgan@nhs.net"  # one role
CIS2_SCOPES = "openid profile email nhsperson nationalrbacaccess associatedorgs selectedrole"
ORGANISATIONS = Path(__file__).resolve().parents[2] / "config" / "organisations.csv"


@pytest.fixture
def oidc_app(app_factory: AppFactory, tmp_path: Path) -> Flask:
    return make_oidc_app(app_factory, tmp_path, organisations_file=str(ORGANISATIONS))


def _tokens(browser: Browser, authorization: Authorization, **kwargs: Any) -> dict[str, Any]:
    response = browser.redeem(authorization, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _audits(app: Flask, event: str) -> list[Any]:
    entries = broker_of(app).repos.audit.list_recent(event_prefix=event, limit=200)
    return [entry for entry in reversed(entries) if entry.event == event]  # oldest first


# client_secret_jwt, and which methods a deployment accepts.


def test_client_secret_jwt_is_accepted_and_a_replayed_assertion_is_refused(
    oidc_app: Flask,
) -> None:
    browser = Browser(oidc_app.test_client(), client_id="secretjwt")
    authorization = browser.signed_in_code()
    assertion = client_assertion("secretjwt", hmac_secret=JWT_SECRET)
    form = {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": REDIRECT,
        "code_verifier": authorization.verifier,
        **assertion,
    }
    first = browser.client.post("/token", data=form)
    assert first.status_code == 200, first.get_data(as_text=True)
    _, claims = id_token_claims(browser.client, first.get_json()["id_token"])
    assert claims["aud"] == "secretjwt"

    # The same assertion again, with a fresh code: its jti was used, so it is refused.
    second_code = browser.signed_in_code()
    replay = browser.client.post(
        "/token", data={**form, "code": second_code.code, "code_verifier": second_code.verifier}
    )
    assert replay.status_code in (400, 401)
    assert replay.get_json()["error"] == "invalid_client"
    # A fresh assertion for the same code still works: the code was not spent.
    fresh = browser.redeem(second_code, auth="secret_jwt", secret=JWT_SECRET)
    assert fresh.status_code == 200, fresh.get_data(as_text=True)


@pytest.mark.parametrize("fraction", [0.5, 0.001])
@pytest.mark.parametrize("client_id", ["secretjwt", "jwtrp"])
def test_an_assertion_is_remembered_for_as_long_as_its_exp_lets_it_be_accepted(
    oidc_app: Flask, clock: FakeClock, client_id: str, fraction: float
) -> None:
    # joserfc accepts an assertion while exp > int(time.time()) - 60: with a fractional
    # exp, until ceil(exp) + 60, not exp + 60. It reads the wall clock and the jti store
    # the broker's clock (one and the same in production). Here the wall clock keeps the
    # assertion acceptable throughout (exp is minutes ahead of it), while the broker's
    # clock is put at the last instant joserfc would still accept it: a replay then must
    # still find the jti.
    start = float(int(time.time()))
    clock.now = datetime.fromtimestamp(start, UTC)
    exp = start + 300 + fraction
    secret = JWT_SECRET if client_id == "secretjwt" else None
    assertion = client_assertion(client_id, exp=exp, hmac_secret=secret)
    browser = Browser(oidc_app.test_client(), client_id=client_id)

    def redeem_with_the_assertion() -> Any:
        authorization = browser.signed_in_code()
        form = {
            "grant_type": "authorization_code",
            "code": authorization.code,
            "redirect_uri": REDIRECT,
            "code_verifier": authorization.verifier,
            **assertion,
        }
        return browser.client.post("/token", data=form)

    first = redeem_with_the_assertion()
    assert first.status_code == 200, first.get_data(as_text=True)
    clock.now = datetime.fromtimestamp(math.ceil(exp) + 60 - 0.001, UTC)
    replay = redeem_with_the_assertion()
    assert replay.status_code in (400, 401), replay.get_data(as_text=True)
    assert replay.get_json()["error"] == "invalid_client"


def test_an_assertion_under_the_wrong_secret_or_for_the_wrong_method_is_refused(
    oidc_app: Flask,
) -> None:
    browser = Browser(oidc_app.test_client(), client_id="secretjwt")
    wrong = browser.redeem(
        browser.signed_in_code(), auth="secret_jwt", secret="x" * len(JWT_SECRET)
    )
    assert wrong.status_code in (400, 401) and wrong.get_json()["error"] == "invalid_client"
    # An HMAC assertion for a private_key_jwt client (a shared secret it does not have,
    # e.g. its public key used as an HMAC key) is refused before anything else.
    jwt_browser = Browser(oidc_app.test_client(), client_id="jwtrp")
    forged = jwt_browser.redeem(jwt_browser.signed_in_code(), auth="secret_jwt", secret=JWT_SECRET)
    assert forged.status_code in (400, 401) and forged.get_json()["error"] == "invalid_client"
    # And the secretjwt client cannot fall back to a plain secret.
    basic = browser.redeem(browser.signed_in_code(), auth="post", secret=JWT_SECRET)
    assert basic.status_code in (400, 401) and basic.get_json()["error"] == "invalid_client"


def test_a_deployment_that_allows_only_jwt_methods_refuses_clients_declaring_others(
    tmp_path: Path,
) -> None:
    clients = write_test_clients(tmp_path / "clients.toml")
    with pytest.raises(OidcConfigError) as refused:
        OidcConfig.from_mapping(
            {
                "clients_file": str(clients),
                "token_endpoint_auth_methods": ["private_key_jwt", "client_secret_jwt"],
            },
            base_dir=tmp_path,
        )
    problems = "\n".join(refused.value.problems)
    assert "'client_secret_basic' is not allowed in this deployment" in problems
    assert "clients.rp" in problems and "clients.public" in problems
    assert "jwtrp" not in problems and "secretjwt" not in problems


def test_discovery_lists_the_deployments_methods_and_cis2s_acr_values(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    (tmp_path / "rp.secret").write_text(JWT_SECRET, encoding="utf-8")
    clients = tmp_path / "only-jwt.toml"
    clients.write_text(
        f"""
[clients.secretjwt]
redirect_uris = ["{REDIRECT}"]
secret_file = "rp.secret"
""",
        encoding="utf-8",
    )
    app = app_factory(
        oidc={
            "clients_file": str(clients),
            "token_endpoint_auth_methods": ["private_key_jwt", "client_secret_jwt"],
        }
    )
    metadata = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert metadata["token_endpoint_auth_methods_supported"] == [
        "client_secret_jwt",
        "private_key_jwt",
    ]
    assert "HS256" in metadata["token_endpoint_auth_signing_alg_values_supported"]
    assert {"AAL3_ANY", "AAL2_OR_AAL3_ANY", "AAL2_ANY", "AAL1_USERPASS"} <= set(
        metadata["acr_values_supported"]
    )
    assert {"nhsperson", "selectedrole"} <= set(metadata["scopes_supported"])
    assert "selected_roleid" in metadata["claims_supported"]


def test_a_client_secret_jwt_secret_must_be_long_and_only_where_the_method_is(
    tmp_path: Path,
) -> None:
    (tmp_path / "short.secret").write_text("too-short", encoding="utf-8")
    (tmp_path / "good.secret").write_text(JWT_SECRET, encoding="utf-8")
    path = tmp_path / "clients.toml"
    path.write_text(
        """
[clients.short]
redirect_uris = ["https://rp.example.test/cb"]
secret_file = "short.secret"

[clients.misplaced]
redirect_uris = ["https://rp.example.test/cb"]
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "good.secret"
secret_file = "good.secret"
""",
        encoding="utf-8",
    )
    with pytest.raises(OidcConfigError) as refused:
        load_clients(path)
    problems = "\n".join(refused.value.problems)
    assert "at least 32 bytes" in problems
    assert "is used only by client_secret_jwt" in problems

    path.write_text(
        """
[clients.good]
redirect_uris = ["https://rp.example.test/cb"]
secret_file = "good.secret"
card_removal = "none"
""",
        encoding="utf-8",
    )
    good = load_clients(path).get("good")
    assert good is not None
    assert good.auth_methods == (AuthMethod.CLIENT_SECRET_JWT,)
    assert good.jwt_secret == JWT_SECRET.encode()
    assert good.card_removal is CardRemoval.NONE
    assert JWT_SECRET not in repr(good)


class _Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_rps_keys_that_cannot_be_read_again_are_kept_for_a_bounded_time(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "rp-keys.json"
    keys_file.write_text(
        json.dumps({"keys": [JWT_CLIENT_KEY.as_dict(private=False)]}), encoding="utf-8"
    )
    path = tmp_path / "clients.toml"
    path.write_text(
        """
[clients.jwtrp]
redirect_uris = ["https://rp.example.test/cb"]
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "rp-keys.json"
""",
        encoding="utf-8",
    )
    record = load_clients(path).get("jwtrp")
    assert record is not None
    client = OAuthClient(record)
    clock = _Monotonic()
    resolver = ClientKeyResolver(monotonic=clock)
    read_at = clock.now
    assert resolver.keys_for(client).get_by_kid(JWT_CLIENT_KEY.kid)

    # The RP withdraws its keys (a key reported stolen) or its host is down: the
    # jwks_uri cannot be read. Past the cache, briefly, the keys last read still serve.
    keys_file.unlink()
    clock.now = read_at + JWKS_CACHE_SECONDS + 1
    assert resolver.keys_for(client).get_by_kid(JWT_CLIENT_KEY.kid)

    # Not for ever: past the bound the client is refused (invalid_client at /token),
    # as an instance that never read the keys refuses it.
    clock.now = read_at + JWKS_STALE_IF_ERROR_SECONDS
    with pytest.raises(ClientKeysUnavailableError) as refused:
        resolver.keys_for(client)
    assert refused.value.detail is not None
    assert "last read" in refused.value.detail
    clock.now += 24 * 3600
    with pytest.raises(ClientKeysUnavailableError):
        resolver.keys_for(client)

    # Readable again: accepted again at once.
    keys_file.write_text(json.dumps({"keys": [JWT_CLIENT_KEY.as_dict(private=False)]}))
    assert resolver.keys_for(client).get_by_kid(JWT_CLIENT_KEY.kid)


# The selectedrole scope and the role page.


def _role_page(browser: Browser, authorization: Authorization) -> tuple[str, str]:
    """After sign-in, the broker sends the browser to choose a role: (tx, page text)."""
    location = authorization.location
    assert location.startswith("/authorize/role?"), location
    page = browser.client.get(location)
    assert page.status_code == 200, page.get_data(as_text=True)
    return query_of(location)["tx"], page.get_data(as_text=True)


def _card_sign_in_for(browser: Browser, tx: str, mail: str) -> Authorization:
    """A card sign-in at the login page of transaction `tx`, and where it goes on to."""
    browser.sign_in_by_card(mail)
    resumed = browser.client.get(f"/authorize/resume?tx={tx}")
    return Authorization(response=resumed, verifier=None, nonce=None, state=None)


def _role_ids(page: str) -> list[str]:
    return re.findall(r'name="person_roleid" value="(\d+)"', page)


def _choose(browser: Browser, tx: str, page: str, person_roleid: str) -> Authorization:
    posted = browser.client.post(
        f"/authorize/role?tx={tx}",
        data={"csrf_token": csrf_token_from(page), "person_roleid": person_roleid},
    )
    assert posted.status_code in (302, 303), posted.get_data(as_text=True)
    resumed = browser.client.get(posted.headers["Location"])
    return Authorization(response=resumed, verifier=None, nonce=None, state=None)


def test_a_person_with_three_roles_chooses_one_and_the_id_token_carries_it(
    oidc_app: Flask,
) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(ROBIN)  # roles come only with AAL2 or better
    started = browser.authorize(scope=CIS2_SCOPES)
    tx, page = _role_page(browser, started)
    ids = _role_ids(page)
    assert len(ids) == 3
    # Each role: its name, code, organisation name and ODS code; nothing is pre-chosen.
    for text in (
        "Clinical Practitioner",
        "R8000",
        "Health Professional",
        "R8003",
        "Riverside Hospitals NHS Trust (demo)",
        "(RX1)",
        "Hillside Medical Practice (demo)",
        "(Y00001)",
        "Meadow Lane Health Centre (demo)",
        "(Y00003)",
    ):
        assert text in page, text
    assert "checked" not in page

    chosen = ids[1]
    done = _choose(browser, tx, page, chosen)
    assert done.response.status_code == 302 and done.location.startswith(REDIRECT)
    done.verifier, done.state = started.verifier, started.state
    tokens = _tokens(browser, done)
    _, claims = id_token_claims(browser.client, tokens["id_token"])
    roles = {r["person_roleid"]: r for r in claims["nhsid_nrbac_roles"]}
    assert claims["selected_roleid"] == chosen and chosen in roles
    assert claims["selected_role_org_code"] == roles[chosen]["org_code"]
    assert claims["selected_role_org_name"] == roles[chosen]["org_name"]
    assert claims["nhsid_useruid"] == "555000000008"
    userinfo = browser.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).get_json()
    assert userinfo["selected_roleid"] == chosen
    audit = _audits(oidc_app, "oidc.role_selected")
    assert [(a.outcome, a.subject, a.details["person_roleid"]) for a in audit] == [
        ("success", ROBIN, chosen)
    ]

    # In the same sign-in session the choice holds: no page again.
    again = browser.authorize(scope=CIS2_SCOPES)
    assert again.location.startswith(REDIRECT), again.location

    # A new sign-in asks again, with the last choice first and already selected.
    other = Browser(oidc_app.test_client())
    other.sign_in_by_card(ROBIN)
    _, second_page = _role_page(other, other.authorize(scope=CIS2_SCOPES))
    assert _role_ids(second_page)[0] == chosen
    assert re.search(rf'value="{chosen}"[^>]*checked', second_page)
    assert "your last choice" in second_page


def test_one_role_is_chosen_without_asking_and_no_scope_means_no_claim(
    oidc_app: Flask,
) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(ALEX)
    authorization = browser.signed_in_code(ALEX, scope=CIS2_SCOPES)
    _, claims = id_token_claims(browser.client, _tokens(browser, authorization)["id_token"])
    assert claims["selected_roleid"] == claims["nhsid_nrbac_roles"][0]["person_roleid"]
    assert claims["selected_role_org_code"] == "RX1"

    plain = Browser(oidc_app.test_client())
    plain.sign_in_by_card(CASEY)
    without = plain.signed_in_code(CASEY, scope="openid profile nationalrbacaccess")
    _, plain_claims = id_token_claims(plain.client, _tokens(plain, without)["id_token"])
    assert "selected_roleid" not in plain_claims
    assert len(plain_claims["nhsid_nrbac_roles"]) == 2


def test_a_choice_that_is_not_one_of_the_persons_roles_is_refused_and_audited(
    oidc_app: Flask,
) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(CASEY)
    tx, page = _role_page(browser, browser.authorize(scope=CIS2_SCOPES))
    for chosen in ("", "000000000000"):
        refused = browser.client.post(
            f"/authorize/role?tx={tx}",
            data={"csrf_token": csrf_token_from(page), "person_roleid": chosen},
        )
        assert refused.status_code == 400
        assert error_code_of(refused) == "oidc_role_not_chosen"
        text = refused.get_data(as_text=True)
        assert "<title>Error: Choose your role" in text and 'aria-invalid="true"' in text
        assert len(_role_ids(text)) == 2
    failures = [a for a in _audits(oidc_app, "oidc.role_selected") if a.outcome == "failure"]
    assert len(failures) == 2 and failures[0].error_code == "oidc_role_not_chosen"
    # Nothing was chosen: the RP has no code yet, and a valid choice still goes through.
    done = _choose(browser, tx, page, _role_ids(page)[0])
    assert done.location.startswith(REDIRECT)


def test_max_age_is_checked_again_when_the_role_is_chosen(
    oidc_app: Flask, clock: FakeClock
) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(ROBIN)
    started = browser.authorize(scope=CIS2_SCOPES, max_age="60")
    tx, page = _role_page(browser, started)
    clock.advance(timedelta(minutes=10))  # the role page left open
    # The sign-in is ten minutes old, the RP asked for one at most: no code from it.
    late = browser.client.post(
        f"/authorize/role?tx={tx}",
        data={"csrf_token": csrf_token_from(page), "person_roleid": _role_ids(page)[0]},
    )
    assert late.status_code == 302 and late.location.startswith("/login?"), late.location
    assert browser.client.get(f"/authorize/role?tx={tx}").location.startswith("/login?")
    assert _audits(oidc_app, "oidc.role_selected") == []
    # Signing in again, and choosing in time, gives the code and a recent auth_time.
    tx, page = _role_page(browser, _card_sign_in_for(browser, tx, ROBIN))
    clock.advance(timedelta(seconds=30))
    done = _choose(browser, tx, page, _role_ids(page)[0])
    assert done.location.startswith(REDIRECT), done.location
    done.verifier = started.verifier
    _, claims = id_token_claims(browser.client, _tokens(browser, done)["id_token"])
    assert int(clock().timestamp()) - claims["auth_time"] <= 60


def test_max_age_is_checked_again_on_resuming_after_the_role_choice(
    oidc_app: Flask, clock: FakeClock
) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(ROBIN)
    tx, page = _role_page(browser, browser.authorize(scope=CIS2_SCOPES, max_age="60"))
    clock.advance(timedelta(seconds=50))
    chosen = browser.client.post(
        f"/authorize/role?tx={tx}",
        data={"csrf_token": csrf_token_from(page), "person_roleid": _role_ids(page)[0]},
    )
    assert chosen.location == f"/authorize/resume?tx={tx}"
    clock.advance(timedelta(seconds=20))  # the code would be issued 70 s after sign-in
    resumed = browser.client.get(chosen.location)
    assert resumed.status_code == 302 and resumed.location.startswith("/login?")


def test_max_age_0_is_met_by_a_sign_in_for_the_request_as_prompt_login_is(
    oidc_app: Flask, clock: FakeClock
) -> None:
    # OIDC Core §3.1.2.1: max_age=0 is prompt=login. A sign-in made for the request
    # meets it, however long the role page then takes.
    for params in ({"max_age": "0"}, {"prompt": "login"}):
        browser = Browser(oidc_app.test_client())
        browser.sign_in_by_card(ROBIN)  # signed in already: asked again
        started = browser.authorize(scope=CIS2_SCOPES, **params)
        assert started.location.startswith("/login?"), started.location
        tx = query_of(started.location)["tx"]
        tx, page = _role_page(browser, _card_sign_in_for(browser, tx, ROBIN))
        clock.advance(timedelta(seconds=20))
        done = _choose(browser, tx, page, _role_ids(page)[0])
        assert done.location.startswith(REDIRECT), (params, done.location)


def test_prompt_none_cannot_show_the_role_page(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(ROBIN)
    silent = browser.authorize(scope=CIS2_SCOPES, prompt="none")
    assert silent.location.startswith(REDIRECT)
    assert silent.params["error"] == "interaction_required"


def test_the_role_page_is_only_for_the_browser_that_started_it(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    browser.sign_in_by_card(ROBIN)
    tx, _ = _role_page(browser, browser.authorize(scope=CIS2_SCOPES))
    stranger = oidc_app.test_client()
    page = stranger.get(f"/authorize/role?tx={tx}")
    assert page.status_code == 400 and error_code_of(page) == "oidc_signin_expired"


# CIS2's acr_values.


@pytest.mark.parametrize("acr_values", ["AAL3_ANY", "AAL2_OR_AAL3_ANY", "AAL2_ANY"])
def test_a_password_session_is_stepped_up_to_a_card_for_cis2s_acr_values(
    oidc_app: Flask, acr_values: str
) -> None:
    browser = Browser(oidc_app.test_client())
    browser.signed_in_code(ALEX)  # a password sign-in: AAL1
    stepped = browser.authorize(acr_values=acr_values)
    # The RP's request is kept (a login transaction) and the login page asks for a card.
    assert stepped.location.startswith("/login?"), stepped.location
    params = query_of(stepped.location)
    assert params["card"] == "required" and params["tx"]
    assert "code" not in stepped.params


def test_a_password_sign_in_never_releases_roles_whatever_the_rp_asks(oidc_app: Flask) -> None:
    # CIS2's authenticators are all AAL2 or better, so an RP written for it reads
    # `nhsid_nrbac_roles` without asking for an acr: a password (AAL1) must not give it
    # the person's roles. Their identity and mail account's organisation still come.
    browser = Browser(oidc_app.test_client())
    tokens = _tokens(browser, browser.signed_in_code(ROBIN, scope=CIS2_SCOPES))
    _, claims = id_token_claims(browser.client, tokens["id_token"])
    userinfo = browser.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).get_json()
    for released in (claims, userinfo):
        assert released["nhsid_nrbac_roles"] == []
        assert "selected_roleid" not in released and "selected_role_org_code" not in released
        assert released["nhsid_user_orgs"] == [
            {"org_code": "RX1", "org_name": "Riverside Hospitals NHS Trust (demo)"}
        ]
        assert released["nhsid_useruid"] == "555000000008"
    assert claims["acr"] == "AAL1_USERPASS"

    # The same person by card: the roles, the role page and every organisation.
    card = Browser(oidc_app.test_client())
    card.sign_in_by_card(ROBIN)
    started = card.authorize(scope=CIS2_SCOPES)
    tx, page = _role_page(card, started)
    done = _choose(card, tx, page, _role_ids(page)[0])
    done.verifier = started.verifier
    _, card_claims = id_token_claims(card.client, _tokens(card, done)["id_token"])
    assert card_claims["acr"] == "AAL3_SMARTCARD"
    assert len(card_claims["nhsid_nrbac_roles"]) == 3 and card_claims["selected_roleid"]
    assert len(card_claims["nhsid_user_orgs"]) == 3


def _card_only_clients(tmp_path: Path, default_acr_values: str) -> Path:
    path = write_test_clients(tmp_path / "clients.toml")
    with path.open("a", encoding="utf-8") as clients:
        clients.write(
            f"""
[clients.cardonly]
name = "Card-only RP"
token_endpoint_auth_method = "none"
redirect_uris = ["{REDIRECT}"]
default_acr_values = {default_acr_values}
"""
        )
    return path


def test_default_acr_values_make_a_client_card_only(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    clients = _card_only_clients(tmp_path, '["AAL3_ANY"]')
    app = app_factory(oidc={"clients_file": str(clients)})
    install_test_signin(app)
    card_only = load_clients(clients).get("cardonly")
    assert card_only is not None and card_only.default_acr_values == ("AAL3_ANY",)
    browser = Browser(app.test_client(), client_id="cardonly")
    Browser(browser.client).signed_in_code(ALEX)  # a password session, through another RP
    # The RP sends no acr_values: the client's default applies, and a password is not
    # enough. Nor can the request (in the browser's hands) lower it.
    for params in ({}, {"acr_values": "AAL1_USERPASS"}, {"acr_values": "AAL2_ANY"}):
        asked = browser.authorize(scope="openid", **params)
        assert asked.location.startswith("/login?"), (params, asked.location)
        assert query_of(asked.location)["card"] == "required"
        silent = browser.authorize(scope="openid", prompt="none", **params)
        assert silent.params["error"] == "login_required", params
    # The login page for it refuses the password.
    tx = query_of(browser.authorize(scope="openid").location)["tx"]
    page = browser.client.get(f"/login?tx={tx}").get_data(as_text=True)
    refused = browser.client.post(
        "/login",
        data={"csrf_token": csrf_token_from(page), "tx": tx, "email": ALEX, "password": "x"},
    )
    assert refused.status_code == 403 and error_code_of(refused) == "card_required"
    # A card session meets it at once.
    browser.sign_in_by_card(ALEX)
    granted = browser.authorize(scope="openid")
    assert granted.location.startswith(REDIRECT) and "code" in granted.params
    _, claims = id_token_claims(browser.client, _tokens(browser, granted, auth="none")["id_token"])
    assert claims["acr"] == "AAL3_SMARTCARD"


def test_default_acr_values_the_broker_does_not_know_are_a_configuration_error(
    tmp_path: Path,
) -> None:
    clients = _card_only_clients(tmp_path, '["AAL3_ANY", "aal3_any"]')
    with pytest.raises(OidcConfigError) as refused:
        load_clients(clients)
    problems = "\n".join(refused.value.problems)
    assert "clients.cardonly" in problems and "'aal3_any'" in problems
    assert "AAL2_OR_AAL3_ANY" in problems  # the values it may name


def test_auth_time_is_in_every_id_token_for_max_age_and_prompt_login(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    for params in ({"max_age": "600"}, {"prompt": "login"}):
        authorization = browser.signed_in_code(ALEX, **params)
        if authorization.location.startswith("/login?"):
            authorization = browser.sign_in(authorization, ALEX)
        _, claims = id_token_claims(browser.client, _tokens(browser, authorization)["id_token"])
        assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]
