"""The OP's signing keys: publication, rotation, encryption at rest, JWKs.

JWKs and signatures are checked with joserfc (authlib's JOSE library), an
implementation independent of the store's own JWK code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from careid_broker.codes import BrokerCode
from careid_broker.store import (
    KeyAlgorithm,
    KeyState,
    SigningKeys,
    SigningKeyUnavailableError,
    Store,
)
from careid_broker.store.models import SigningKey
from support.clock import FakeClock


def _states(keys: SigningKeys) -> dict[str, KeyState]:
    return {k.kid: k.state for k in keys.publishable()}


def _sign_and_verify(keys: SigningKeys) -> None:
    active = keys.current()
    header = {"alg": active.alg.value, "kid": active.kid}
    token = jwt.encode(header, {"sub": "x"}, _joserfc_key(active.private_key))
    jwks = KeySet.import_key_set({"keys": [dict(k.public_jwk) for k in keys.publishable()]})
    assert jwt.decode(token, jwks).claims == {"sub": "x"}


def _joserfc_key(private_key: Any) -> ECKey | RSAKey:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return RSAKey.import_key(private_key)
    return ECKey.import_key(private_key)


def test_initial_keys_are_a_current_and_a_published_next(store: Store) -> None:
    keys = SigningKeys(store, alg=KeyAlgorithm.ES256)
    keys.ensure_keys()
    keys.ensure_keys()  # idempotent
    published = keys.publishable()
    assert [k.state for k in published] == [KeyState.CURRENT, KeyState.NEXT]
    for key in published:
        jwk = dict(key.public_jwk)
        assert jwk["kid"] == key.kid == ECKey.import_key(jwk).thumbprint()
        assert jwk["alg"] == "ES256" and jwk["use"] == "sig" and "d" not in jwk
    assert keys.current().kid == published[0].kid
    _sign_and_verify(keys)


def test_rotation_moves_every_key_one_step(store: Store, clock: FakeClock) -> None:
    keys = SigningKeys(store, alg=KeyAlgorithm.ES256)
    keys.ensure_keys()
    first = _states(keys)
    current0 = next(k for k, s in first.items() if s is KeyState.CURRENT)
    next0 = next(k for k, s in first.items() if s is KeyState.NEXT)

    clock.advance(timedelta(days=30))
    result = keys.rotate()
    assert result.rotated and result.current_kid == next0 and result.retired_kids == ()
    assert _states(keys) == {
        next0: KeyState.CURRENT,
        current0: KeyState.PREVIOUS,
        result.next_kid: KeyState.NEXT,
    }
    active = [k for k in keys.publishable() if k.state is KeyState.CURRENT][0]
    assert active.activated_at == clock.now
    _sign_and_verify(keys)

    second = keys.rotate()
    assert second.retired_kids == (current0,)
    assert current0 not in _states(keys)  # retired keys leave the JWKS
    assert len(keys.publishable()) == 3
    # ... and keep no private part: a retired key signs nothing more, so nothing can
    # be stolen from it. The others keep theirs, and the new current key signs.
    with store.session() as session:
        pems = dict(session.execute(select(SigningKey.kid, SigningKey.private_key_pem)).all())
    assert pems[current0] is None
    assert all(pem for kid, pem in pems.items() if kid != current0)
    _sign_and_verify(keys)


def test_a_scheduled_rotation_run_by_two_instances_rotates_once(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    SigningKeys(store, alg=KeyAlgorithm.ES256).ensure_keys()
    instances = [
        SigningKeys(store, alg=KeyAlgorithm.ES256),
        SigningKeys(other_store, alg=KeyAlgorithm.ES256),
    ]
    expected = instances[0].current().kid
    results = concurrently(
        4, lambda i: instances[i % 2].rotate(expected_current_kid=expected).rotated
    )
    assert results.count(True) == 1
    assert len(instances[0].publishable()) == 3


def test_two_current_keys_are_impossible(store: Store) -> None:
    keys = SigningKeys(store, alg=KeyAlgorithm.ES256)
    keys.ensure_keys()
    with pytest.raises(IntegrityError), store.transaction() as session:
        session.execute(update(SigningKey).values(state="current"))


def test_private_keys_are_encrypted_when_a_passphrase_is_set(store: Store) -> None:
    keys = SigningKeys(store, passphrase=b"correct horse", alg=KeyAlgorithm.ES256)
    keys.ensure_keys()
    with store.session() as session:
        pems = session.scalars(select(SigningKey.private_key_pem)).all()
    assert all(p.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----") for p in pems)
    _sign_and_verify(keys)

    for wrong in (SigningKeys(store, passphrase=b"wrong"), SigningKeys(store)):
        with pytest.raises(SigningKeyUnavailableError) as caught:
            wrong.current()
        assert caught.value.code is BrokerCode.SIGNING_KEY_UNAVAILABLE
        assert "horse" not in str(caught.value)


def test_rs256_keys_publish_rsa_jwks(store: Store) -> None:
    keys = SigningKeys(store)  # RS256 by default
    keys.ensure_keys()
    jwk = dict(keys.publishable()[0].public_jwk)
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["e"] == "AQAB"
    assert jwk["kid"] == RSAKey.import_key(jwk).thumbprint()
    _sign_and_verify(keys)


def test_no_current_key_is_a_typed_error(store: Store) -> None:
    with pytest.raises(SigningKeyUnavailableError):
        SigningKeys(store).current()


def test_each_algorithm_has_its_own_lifecycle_and_one_jwks(store: Store) -> None:
    rsa_keys = SigningKeys(store)
    ec_keys = rsa_keys.for_alg(KeyAlgorithm.ES256)
    assert rsa_keys.for_alg(KeyAlgorithm.RS256) is rsa_keys and ec_keys.alg is KeyAlgorithm.ES256
    rsa_keys.ensure_keys()
    ec_keys.ensure_keys()
    assert rsa_keys.current().alg is KeyAlgorithm.RS256
    assert ec_keys.current().alg is KeyAlgorithm.ES256
    published = rsa_keys.publishable()
    assert published == ec_keys.publishable()
    assert sorted((k.alg.value, k.state.value) for k in published) == [
        ("ES256", "current"),
        ("ES256", "next"),
        ("RS256", "current"),
        ("RS256", "next"),
    ]
    rsa_current = rsa_keys.current().kid
    ec_keys.rotate()
    assert rsa_keys.current().kid == rsa_current  # the other algorithm is untouched
    assert len(rsa_keys.publishable()) == 5
    _sign_and_verify(rsa_keys)
    _sign_and_verify(ec_keys)


def _pems(store: Store) -> dict[str, str | None]:
    with store.session() as session:
        rows = session.execute(select(SigningKey.kid, SigningKey.private_key_pem)).all()
    return {row.kid: row.private_key_pem for row in rows}


def test_a_changed_passphrase_is_applied_to_every_stored_key(store: Store) -> None:
    old = SigningKeys(store, passphrase=b"old passphrase")
    old.ensure_keys()
    old.rotate()  # a previous key too: every published key is re-encrypted
    old.rotate()  # and one retired key, which keeps no private part
    old.for_alg(KeyAlgorithm.ES256).ensure_keys()
    before = _pems(store)
    with_private = sorted(kid for kid, pem in before.items() if pem is not None)

    # During the change the broker loads keys under either passphrase.
    changing = SigningKeys(
        store, passphrase=b"new passphrase", previous_passphrase=b"old passphrase"
    )
    _sign_and_verify(changing)
    assert sorted(changing.reencrypt()) == with_private

    after = _pems(store)
    assert all(after[kid] != before[kid] for kid in with_private)
    assert all(
        str(after[kid]).startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----") for kid in with_private
    )
    new_only = SigningKeys(store, passphrase=b"new passphrase")
    _sign_and_verify(new_only)
    _sign_and_verify(new_only.for_alg(KeyAlgorithm.ES256))
    with pytest.raises(SigningKeyUnavailableError):
        SigningKeys(store, passphrase=b"old passphrase").current()


def test_keys_made_without_a_passphrase_are_encrypted(store: Store) -> None:
    SigningKeys(store).ensure_keys()
    keys = SigningKeys(store, passphrase=b"new passphrase")
    assert len(keys.reencrypt()) == 2
    with store.session() as session:
        assert set(session.scalars(select(SigningKey.encrypted))) == {True}
    _sign_and_verify(keys)


def test_reencryption_is_all_or_nothing(store: Store) -> None:
    SigningKeys(store, passphrase=b"old passphrase").ensure_keys()
    SigningKeys(store, alg=KeyAlgorithm.ES256).ensure_keys()  # these two in clear
    before = _pems(store)
    wrong = SigningKeys(store, passphrase=b"new passphrase", previous_passphrase=b"not it")
    with pytest.raises(SigningKeyUnavailableError) as caught:
        wrong.reencrypt()
    assert "could not be decrypted" in str(caught.value)
    assert "not it" not in str(caught.value) and "new passphrase" not in str(caught.value)
    assert _pems(store) == before
    with pytest.raises(ValueError, match="no passphrase"):
        SigningKeys(store).reencrypt()


def test_a_new_key_is_refused_when_the_passphrase_does_not_open_the_live_keys(
    store: Store,
) -> None:
    SigningKeys(store, passphrase=b"correct horse", alg=KeyAlgorithm.ES256).ensure_keys()
    before = _pems(store)
    # A shell without the passphrase, or with a mistyped one: a key made now would be in
    # clear, or under a passphrase nothing else uses, and would sign after one rotation.
    for wrong in (
        SigningKeys(store, alg=KeyAlgorithm.ES256),
        SigningKeys(store, passphrase=b"correct hrose", alg=KeyAlgorithm.ES256),
    ):
        with pytest.raises(SigningKeyUnavailableError) as caught:
            wrong.rotate()
        assert caught.value.code is BrokerCode.SIGNING_KEY_UNAVAILABLE
        assert "CAREID_OIDC_SIGNING_KEY_PASSPHRASE" in str(caught.value)
        assert "horse" not in str(caught.value) and "hrose" not in str(caught.value)
        assert _pems(store) == before  # nothing rotated, nothing added

    # Start-up makes a missing key the same way, and is refused the same way.
    with store.transaction() as session:
        session.execute(delete(SigningKey).where(SigningKey.state == KeyState.NEXT.value))
    only_current = _pems(store)
    for wrong in (
        SigningKeys(store, alg=KeyAlgorithm.ES256),
        SigningKeys(store, passphrase=b"correct hrose", alg=KeyAlgorithm.ES256),
    ):
        with pytest.raises(SigningKeyUnavailableError, match="CAREID_OIDC_SIGNING_KEY"):
            wrong.ensure_keys()
    assert _pems(store) == only_current

    # The right passphrase, or the one being replaced as the previous one, still works.
    right = SigningKeys(store, passphrase=b"correct horse", alg=KeyAlgorithm.ES256)
    right.ensure_keys()
    right.rotate()
    changing = SigningKeys(
        store,
        passphrase=b"new passphrase",
        previous_passphrase=b"correct horse",
        alg=KeyAlgorithm.ES256,
    )
    changing.rotate()
    _sign_and_verify(changing)
    with store.session() as session:
        assert set(session.scalars(select(SigningKey.encrypted))) == {True}


def test_keys_made_in_clear_still_rotate_once_a_passphrase_is_set(store: Store) -> None:
    SigningKeys(store).ensure_keys()
    clear = set(_pems(store))
    keys = SigningKeys(store, passphrase=b"new passphrase")
    result = keys.rotate()  # the documented way out: new keys encrypted, then reencrypt
    with store.session() as session:
        encrypted = dict(session.execute(select(SigningKey.kid, SigningKey.encrypted)).all())
    assert encrypted[result.next_kid] is True
    assert all(encrypted[kid] is False for kid in clear)
    assert len(keys.reencrypt()) == 3
    _sign_and_verify(keys)
