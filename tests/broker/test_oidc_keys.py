"""Signing keys as RPs see them: the JWKS through a rotation, the `kid` in ID tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from broker_support import broker_of
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet
from oidc_support import Browser, id_token_claims, make_oidc_app

from careid_broker.store import KeyAlgorithm, KeyState


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
    provider.signer.forget()  # this process's cache; others pick it up within 30 s

    after = oidc_browser.redeem(oidc_browser.signed_in_code()).get_json()["id_token"]
    new_header, _ = id_token_claims(oidc_browser.client, after)
    assert new_header["kid"] == next_kid != old_header["kid"]
    published = _published(oidc_browser)
    # The previous key is still published: ID tokens it signed still verify.
    assert old_header["kid"] in published and result.next_kid in published
    keys = KeySet.import_key_set(oidc_browser.client.get("/jwks").get_json())
    assert jwt.decode(before, keys).claims["aud"] == "rp"

    rs256.rotate()
    provider.signer.forget()
    assert old_header["kid"] not in _published(oidc_browser)  # retired after two rotations
