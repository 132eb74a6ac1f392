"""What relying parties written for NHS CIS2 Authentication rely on.

client_secret_jwt (RFC 7523) beside private_key_jwt, per-deployment allowed methods,
CIS2's scopes (`nhsperson`, `selectedrole`) and the role page, and CIS2's `acr_values`
names with step-up. The card side of `card_removal` is in tests/card/test_card_lock.py;
an RP configured as a CIS2 integration guide says signs in by card in Chromium in
tests/e2e/test_e2e_cis2_rp.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of, csrf_token_from, error_code_of, install_test_signin
from flask import Flask
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, RSAKey
from oidc_support import (
    ISSUER,
    JWT_CLIENT_KEY,
    JWT_SECRET,
    REDIRECT,
    Authorization,
    Browser,
    client_assertion,
    id_token_claims,
    inline_jwks,
    make_oidc_app,
    query_of,
    write_test_clients,
)

from careid_broker.oidc.client_auth import (
    JWKS_CACHE_SECONDS,
    JWKS_STALE_IF_ERROR_SECONDS,
    JWKS_UNKNOWN_KID_INTERVAL_SECONDS,
    ClientKeyResolver,
    fetch_jwks,
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


# The algorithms a client assertion may be signed with. CIS2 integrations sign with
# RS512 as often as RS256; each key is used under the algorithms of its own type only.
RSA_CLIENT_KEY = RSAKey.generate_key(2048, private=True, auto_kid=True)
P384_CLIENT_KEY = ECKey.generate_key("P-384", private=True, auto_kid=True)
P521_CLIENT_KEY = ECKey.generate_key("P-521", private=True, auto_kid=True)
JWT_SECRET_KEY = OctKey.import_key(JWT_SECRET.encode())
ASSERTION_SIGNERS: dict[str, tuple[str, Key]] = {
    "RS256": ("rsarp", RSA_CLIENT_KEY),
    "RS384": ("rsarp", RSA_CLIENT_KEY),
    "RS512": ("rsarp", RSA_CLIENT_KEY),
    "PS256": ("rsarp", RSA_CLIENT_KEY),
    "PS384": ("rsarp", RSA_CLIENT_KEY),
    "PS512": ("rsarp", RSA_CLIENT_KEY),
    "ES256": ("jwtrp", JWT_CLIENT_KEY),
    "ES384": ("p384rp", P384_CLIENT_KEY),
    "ES512": ("p521rp", P521_CLIENT_KEY),
    "HS256": ("secretjwt", JWT_SECRET_KEY),
    "HS384": ("secretjwt", JWT_SECRET_KEY),
    "HS512": ("secretjwt", JWT_SECRET_KEY),
}


@pytest.fixture
def keys_app(app_factory: AppFactory, tmp_path: Path) -> Flask:
    """The test clients, and private_key_jwt clients with an RSA, a P-384 and a P-521 key."""
    clients = write_test_clients(tmp_path / "clients.toml")
    with clients.open("a", encoding="utf-8") as extra:
        for client_id, key in [
            ("rsarp", RSA_CLIENT_KEY),
            ("p384rp", P384_CLIENT_KEY),
            ("p521rp", P521_CLIENT_KEY),
        ]:
            extra.write(
                f'\n[clients.{client_id}]\nredirect_uris = ["{REDIRECT}"]\n'
                f"jwks = {inline_jwks(key)}\n"
            )
    return app_factory(oidc={"clients_file": str(clients)})


def _code_form(authorization: Authorization) -> dict[str, str]:
    assert authorization.verifier is not None
    return {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": REDIRECT,
        "code_verifier": authorization.verifier,
    }


def _assertion_claims(client_id: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{ISSUER}/token",
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + 60,
    }


def _hand_made_assertion(
    header: dict[str, Any], client_id: str, sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS made by hand: what a JOSE library refuses to make (alg none, an
    HMAC under a public key)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    claims = _assertion_claims(client_id)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode('ascii')))}"


@pytest.mark.parametrize("alg", list(ASSERTION_SIGNERS))
def test_a_client_assertion_is_accepted_under_each_algorithm_discovery_lists(
    keys_app: Flask, alg: str
) -> None:
    client_id, key = ASSERTION_SIGNERS[alg]
    client = keys_app.test_client()
    browser = Browser(client, client_id=client_id)
    response = client.post(
        "/token",
        data={
            **_code_form(browser.signed_in_code()),
            **client_assertion(client_id, key=key, alg=alg),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    _, claims = id_token_claims(client, response.get_json()["id_token"])
    assert claims["aud"] == client_id
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert alg in metadata["token_endpoint_auth_signing_alg_values_supported"]


@pytest.mark.parametrize(("alg", "least"), [("HS384", 48), ("HS512", 64)])
def test_an_hmac_longer_than_the_clients_secret_is_refused(
    app_factory: AppFactory, tmp_path: Path, alg: str, least: int
) -> None:
    # RFC 7518 §3.2: an HMAC key at least as long as the hash. A 40-byte secret (the
    # broker takes 32 and up) signs HS256 only.
    secret = "s" * 40
    (tmp_path / "rp.secret").write_text(secret, encoding="utf-8")
    clients = tmp_path / "short.toml"
    clients.write_text(
        f'[clients.secretjwt]\nredirect_uris = ["{REDIRECT}"]\nsecret_file = "rp.secret"\n',
        encoding="utf-8",
    )
    app = app_factory(
        oidc={"clients_file": str(clients), "token_endpoint_auth_methods": ["client_secret_jwt"]}
    )
    client = app.test_client()
    browser = Browser(client, client_id="secretjwt")
    key = OctKey.import_key(secret.encode())
    authorization = browser.signed_in_code()
    refused = client.post(
        "/token",
        data={**_code_form(authorization), **client_assertion("secretjwt", key=key, alg=alg)},
    )
    assert refused.status_code in (400, 401), refused.get_data(as_text=True)
    assert refused.get_json()["error"] == "invalid_client"
    assert f"at least {least} bytes" in refused.get_json()["error_description"]
    entry = _audits(app, "oidc.token")[0]
    assert entry.outcome == "failure"
    # The same secret under HS256 still works, with the same code: nothing was spent.
    fine = client.post(
        "/token",
        data={**_code_form(authorization), **client_assertion("secretjwt", key=key, alg="HS256")},
    )
    assert fine.status_code == 200, fine.get_data(as_text=True)


def _hs256_under_the_rsa_public_key(client_id: str) -> str:
    # The classic algorithm confusion: the RSA public key (public, in the RP's JWK
    # set) used as an HMAC secret.
    pem = RSA_CLIENT_KEY.as_pem(private=False)
    header = {"alg": "HS256", "kid": RSA_CLIENT_KEY.kid}
    return _hand_made_assertion(
        header, client_id, lambda data: hmac.new(pem, data, hashlib.sha256).digest()
    )


def _signed_naming(client_id: str, key: Key, alg: str, kid: str | None) -> str:
    """Signed with `key` under `alg`, the header naming key `kid` (none: no kid)."""
    header = {"alg": alg} if kid is None else {"alg": alg, "kid": kid}
    return jwt.encode(header, _assertion_claims(client_id), key, algorithms=[alg])


def _alg_none(client_id: str, kid: str | None) -> str:
    header = {"alg": "none"} if kid is None else {"alg": "none", "kid": kid}
    return _hand_made_assertion(header, client_id, lambda data: b"")


CONFUSED_ASSERTIONS: dict[str, Callable[[], str]] = {
    "HS256 under an RSA client's public key": lambda: _hs256_under_the_rsa_public_key("rsarp"),
    "RS256 for a client_secret_jwt client": lambda: _signed_naming(
        "secretjwt", RSA_CLIENT_KEY, "RS256", RSA_CLIENT_KEY.kid
    ),
    "ES256 naming an RSA client's key": lambda: _signed_naming(
        "rsarp", JWT_CLIENT_KEY, "ES256", RSA_CLIENT_KEY.kid
    ),
    "ES384 naming a P-256 key": lambda: _signed_naming(
        "jwtrp", P384_CLIENT_KEY, "ES384", JWT_CLIENT_KEY.kid
    ),
    "ES512 naming a P-384 key": lambda: _signed_naming(
        "p384rp", P521_CLIENT_KEY, "ES512", P384_CLIENT_KEY.kid
    ),
    "none for a private_key_jwt client": lambda: _alg_none("rsarp", RSA_CLIENT_KEY.kid),
    "none for a client_secret_jwt client": lambda: _alg_none("secretjwt", None),
}


@pytest.mark.parametrize("case", list(CONFUSED_ASSERTIONS))
def test_an_assertion_under_an_algorithm_its_clients_key_is_not_for_is_refused(
    keys_app: Flask, case: str
) -> None:
    assertion = CONFUSED_ASSERTIONS[case]()
    client_id = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))["sub"]
    browser = Browser(keys_app.test_client(), client_id=client_id)
    form = _code_form(browser.signed_in_code())
    refused = browser.client.post(
        "/token",
        data={
            **form,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )
    assert refused.status_code in (400, 401), refused.get_data(as_text=True)
    assert refused.get_json()["error"] == "invalid_client"
    entry = _audits(keys_app, "oidc.token")[-1]
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_client"
    # The code was not spent: the client's proper assertion redeems it.
    alg, key = next((a, k) for a, (c, k) in ASSERTION_SIGNERS.items() if c == client_id)
    proper = browser.client.post(
        "/token", data={**form, **client_assertion(client_id, key=key, alg=alg)}
    )
    assert proper.status_code == 200, proper.get_data(as_text=True)


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
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == list(ASSERTION_SIGNERS)
    assert {"AAL3_ANY", "AAL2_OR_AAL3_ANY", "AAL2_ANY", "AAL1_USERPASS"} <= set(
        metadata["acr_values_supported"]
    )
    assert {"nhsperson", "selectedrole"} <= set(metadata["scopes_supported"])
    assert "selected_roleid" in metadata["claims_supported"]


def test_discovery_lists_hmac_algorithms_only_where_client_secret_jwt_is_allowed(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    clients = tmp_path / "only-keys.toml"
    clients.write_text(
        f"""
[clients.jwtrp]
redirect_uris = ["{REDIRECT}"]
jwks = {inline_jwks(JWT_CLIENT_KEY)}
""",
        encoding="utf-8",
    )
    app = app_factory(
        oidc={"clients_file": str(clients), "token_endpoint_auth_methods": ["private_key_jwt"]}
    )
    metadata = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == [
        alg for alg in ASSERTION_SIGNERS if not alg.startswith("HS")
    ]


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


def _client_reading_keys_from(folder: Path, jwks_uri: str) -> OAuthClient:
    """The private_key_jwt client "jwtrp", its keys read from `jwks_uri` in `folder`."""
    path = folder / "clients.toml"
    path.write_text(
        f"""
[clients.jwtrp]
redirect_uris = ["https://rp.example.test/cb"]
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "{jwks_uri}"
""",
        encoding="utf-8",
    )
    record = load_clients(path).get("jwtrp")
    assert record is not None
    return OAuthClient(record)


def test_an_rps_keys_that_cannot_be_read_again_are_kept_for_a_bounded_time(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "rp-keys.json"
    keys_file.write_text(
        json.dumps({"keys": [JWT_CLIENT_KEY.as_dict(private=False)]}), encoding="utf-8"
    )
    client = _client_reading_keys_from(tmp_path, "rp-keys.json")
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


def _jwks_file(path: Path, *keys: Key) -> None:
    path.write_text(
        json.dumps({"keys": [key.as_dict(private=False) for key in keys]}), encoding="utf-8"
    )


def test_an_rp_that_publishes_a_new_key_may_sign_with_it_at_once(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    old, new, newer = (RSAKey.generate_key(2048, private=True, auto_kid=True) for _ in range(3))
    keys_file = tmp_path / "rp-keys.json"
    _jwks_file(keys_file, old)
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f"""
[clients.rotating]
redirect_uris = ["{REDIRECT}"]
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "{keys_file.name}"
""",
        encoding="utf-8",
    )
    app = app_factory(oidc={"clients_file": str(clients)})
    browser = Browser(app.test_client(), client_id="rotating")

    def redeem_signed_with(key: Key) -> Any:
        form = _code_form(browser.signed_in_code())
        assertion = client_assertion("rotating", key=key, alg="RS256")
        return browser.client.post("/token", data={**form, **assertion})

    first = redeem_signed_with(old)
    assert first.status_code == 200, first.get_data(as_text=True)
    # As docs/keys-and-rotation.md asks: the new key is published, then signed with.
    # The broker read the keys a moment ago, yet the kid it has not seen makes it
    # read them again.
    _jwks_file(keys_file, old, new)
    rotated = redeem_signed_with(new)
    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    # Not at every unknown kid: another within the interval finds the keys just read.
    _jwks_file(keys_file, old, new, newer)
    too_soon = redeem_signed_with(newer)
    assert too_soon.status_code in (400, 401), too_soon.get_data(as_text=True)
    assert too_soon.get_json()["error"] == "invalid_client"
    assert "kid" in too_soon.get_json()["error_description"]
    entry = _audits(app, "oidc.token")[-1]
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_client"
    assert redeem_signed_with(new).status_code == 200


def test_unknown_kids_read_an_rps_keys_again_at_most_once_an_interval(
    tmp_path: Path,
) -> None:
    old, new = (ECKey.generate_key("P-256", private=True, auto_kid=True) for _ in range(2))
    keys_file = tmp_path / "rp-keys.json"
    _jwks_file(keys_file, old)
    client = _client_reading_keys_from(tmp_path, "rp-keys.json")
    reads: list[str] = []

    def counted_fetch(url: str) -> dict[str, Any]:
        reads.append(url)
        return fetch_jwks(url)

    clock = _Monotonic()
    resolver = ClientKeyResolver(fetch=counted_fetch, monotonic=clock)
    assert resolver.keys_for(client, kid=old.kid).get_by_kid(old.kid)
    assert len(reads) == 1
    # A known kid, or none, is served from the cache.
    resolver.keys_for(client, kid=old.kid)
    resolver.keys_for(client)
    assert len(reads) == 1

    # Random kids (someone probing, or an RP signing with a key it has not published)
    # read the keys again once, then not until the interval has passed.
    for _ in range(50):
        assert resolver.keys_for(client, kid=secrets.token_urlsafe(8)).get_by_kid(old.kid)
    assert len(reads) == 2
    clock.now += JWKS_UNKNOWN_KID_INTERVAL_SECONDS - 1
    resolver.keys_for(client, kid="unknown")
    assert len(reads) == 2

    # The RP publishes a new key: past the interval, its kid is found at once.
    _jwks_file(keys_file, old, new)
    clock.now += 1
    assert resolver.keys_for(client, kid=new.kid).get_by_kid(new.kid)
    assert len(reads) == 3

    # A read again that fails keeps the keys read (within the cache), as any read does.
    keys_file.unlink()
    clock.now += JWKS_UNKNOWN_KID_INTERVAL_SECONDS
    assert resolver.keys_for(client, kid="unknown").get_by_kid(new.kid)
    assert len(reads) == 4


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
