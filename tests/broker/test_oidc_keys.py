"""Signing keys as RPs see them: the JWKS through a rotation, the `kid` in ID tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet
from metrics_support import sample
from oidc_support import Browser, id_token_claims, make_oidc_app

from careid_broker.oidc.keys import READY, READY_CHECK_SECONDS, TokenSigner
from careid_broker.store import KeyAlgorithm, KeyState, SigningKeyUnavailableError


@pytest.fixture
def oidc_app(app_factory: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_oidc_app(app_factory, tmp_path)


def _published(oidc_browser: Browser) -> dict[str, str]:
    response = oidc_browser.client.get("/jwks")
    assert response.status_code == 200
    assert "max-age" in response.headers["Cache-Control"]
    return {key["kid"]: key["alg"] for key in response.get_json()["keys"]}


def test_jwks_publish_current_and_next_of_every_algorithm_in_use(oidc_app: Flask) -> None:
    oidc_browser = Browser(oidc_app.test_client())
    published = _published(oidc_browser)
    # RS256 (the default) and ES256 (the jwtrp client): a current and a next key each.
    assert sorted(published.values()) == ["ES256", "ES256", "RS256", "RS256"]
    states = {k.kid: k.state for k in broker_of(oidc_app).oidc.repos.keys.publishable()}
    assert set(states) == set(published)
    assert sorted(states.values()) == sorted([KeyState.CURRENT, KeyState.NEXT] * 2)


def test_a_rotation_signs_with_the_published_next_key_and_keeps_the_old_one(
    oidc_app: Flask,
) -> None:
    oidc_browser = Browser(oidc_app.test_client())
    provider = broker_of(oidc_app).oidc
    before = oidc_browser.redeem(oidc_browser.signed_in_code()).get_json()["id_token"]
    old_header, _ = id_token_claims(oidc_browser.client, before)
    rs256 = provider.repos.keys.for_alg(KeyAlgorithm.RS256)
    next_kid = next(
        k.kid
        for k in rs256.publishable()
        if k.state is KeyState.NEXT and k.alg is KeyAlgorithm.RS256
    )

    result = rs256.rotate()
    assert result.current_kid == next_kid

    after = oidc_browser.redeem(oidc_browser.signed_in_code()).get_json()["id_token"]
    new_header, _ = id_token_claims(oidc_browser.client, after)
    assert new_header["kid"] == next_kid != old_header["kid"]
    published = _published(oidc_browser)
    # The previous key is still published: ID tokens it signed still verify.
    assert old_header["kid"] in published and result.next_kid in published
    keys = KeySet.import_key_set(oidc_browser.client.get("/jwks").get_json())
    assert jwt.decode(before, keys).claims["aud"] == "rp"

    rs256.rotate()
    assert old_header["kid"] not in _published(oidc_browser)  # retired after two rotations


def test_a_rotation_on_another_instance_is_signed_with_at_the_next_token_here(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    # Two instances over one database; `here` has loaded and used its current key.
    here = make_oidc_app(app_factory, tmp_path)
    elsewhere = make_oidc_app(app_factory, tmp_path)
    browser = Browser(here.test_client())
    first = browser.redeem(browser.signed_in_code()).get_json()["id_token"]
    exposed, _ = id_token_claims(browser.client, first)
    keys = broker_of(elsewhere).oidc.repos.keys.for_alg(KeyAlgorithm.RS256)

    # One rotation (`keys rotate` on any host): the next token here is signed with
    # the new current key, not the one this process has loaded.
    once = keys.rotate()
    after_one = browser.redeem(browser.signed_in_code()).get_json()["id_token"]
    header, _ = id_token_claims(browser.client, after_one)
    assert header["kid"] == once.current_kid != exposed["kid"]

    # The documented answer to an exposed key: a second rotation retires it and
    # erases its private part. Nothing here signs with it again.
    twice = keys.rotate()
    assert exposed["kid"] in twice.retired_kids
    after_two = browser.redeem(browser.signed_in_code()).get_json()["id_token"]
    header, _ = id_token_claims(browser.client, after_two)  # verifies against /jwks
    assert header["kid"] == twice.current_kid
    assert exposed["kid"] not in _published(browser)


def test_an_undecryptable_signing_key_fails_readyz_and_token_requests_count_it(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    # One instance makes the keys with the right passphrase; another, on the same
    # database, was given the wrong one.
    right = make_oidc_app(app_factory, tmp_path, signing_key_passphrase="right horse")
    assert right.test_client().get("/readyz").get_json()["checks"]["signing_key"] == "ok"
    wrong = make_oidc_app(app_factory, tmp_path, signing_key_passphrase="wrong horse")
    client = wrong.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "not_ready"
    assert ready.get_json()["checks"]["signing_key"] == "signing_key_unavailable"

    oidc_browser = Browser(client)
    refused = oidc_browser.redeem(oidc_browser.signed_in_code())
    assert refused.status_code == 503
    metrics = client.get("/metrics").get_data(as_text=True)
    counted = sample(
        metrics,
        "careid_token_requests_total",
        grant_type="authorization_code",
        result="signing_key_unavailable",
    )
    assert counted == 1


class _FakeKeys:
    """A store's keys of one algorithm that can be made to fail."""

    def __init__(self) -> None:
        self.loads = 0
        self.broken = False

    def ensure_keys(self) -> None:
        pass

    def current(self, *, reuse: Any = None) -> Any:
        self.loads += 1
        if self.broken:
            raise SigningKeyUnavailableError(detail="signing key k1 could not be decrypted")
        return _Active()


class _Active:
    kid = "k1"
    alg = KeyAlgorithm.ES256

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())


def test_readiness_is_kept_for_a_few_seconds_and_fails_closed() -> None:
    keys = _FakeKeys()
    now = [0.0]
    signer = TokenSigner(lambda alg: keys, monotonic=lambda: now[0])  # type: ignore[arg-type,return-value]
    keys.broken = True
    assert signer.ready() == "signing_key_unavailable"
    loads = keys.loads
    now[0] += READY_CHECK_SECONDS / 2
    keys.broken = False
    assert signer.ready() == "signing_key_unavailable"  # the kept answer: no decryption
    assert keys.loads == loads
    now[0] += READY_CHECK_SECONDS
    assert signer.ready() == READY
    assert keys.loads > loads
