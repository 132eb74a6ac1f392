"""The OP's signing keys: next → current → previous → retired, per algorithm.

A new key is published (state `next`) one rotation before it signs anything, so RPs
that cache the JWKS already know it; the previous key stays published until its tokens
have expired. Each algorithm (RS256 by default, ES256 for clients that ask for it) has
its own lifecycle; the JWKS shows them all. Private keys are encrypted at rest when a
passphrase is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from careid_broker.store._sql import SIGNING_KEYS_LOCK, serialize_on
from careid_broker.store.engine import Store
from careid_broker.store.errors import SigningKeyUnavailableError
from careid_broker.store.jwk import public_jwk
from careid_broker.store.models import SigningKey
from careid_broker.store.prepared import Prepared

log = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeyState(StrEnum):
    """Where a key is in its life."""

    NEXT = "next"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"


class KeyAlgorithm(StrEnum):
    """JWS algorithms the OP signs with."""

    RS256 = "RS256"
    ES256 = "ES256"


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedKey:
    """A key as the JWKS shows it."""

    kid: str
    alg: KeyAlgorithm
    state: KeyState
    public_jwk: Mapping[str, Any]
    created_at: datetime
    activated_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ActiveSigningKey:
    """The current key with its private half, for signing ID and logout tokens."""

    kid: str
    alg: KeyAlgorithm
    private_key: PrivateKey


@dataclass(frozen=True, kw_only=True, slots=True)
class RotationResult:
    """What a rotation did; `rotated` is False when another instance already had."""

    rotated: bool
    current_kid: str
    next_kid: str
    retired_kids: tuple[str, ...]


def generate_private_key(alg: KeyAlgorithm) -> PrivateKey:
    """A fresh key pair for the algorithm."""
    if alg is KeyAlgorithm.RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


class SigningKeys:
    """Create, rotate, publish and load the OP's signing keys of one algorithm."""

    def __init__(
        self,
        store: Store,
        *,
        passphrase: bytes | None = None,
        previous_passphrase: bytes | None = None,
        alg: KeyAlgorithm = KeyAlgorithm.RS256,
    ) -> None:
        self._store = store
        self._passphrase = passphrase
        # While the passphrase changes: keys still encrypted under the old one load too.
        self._previous = previous_passphrase
        self._alg = alg

    @property
    def alg(self) -> KeyAlgorithm:
        """The algorithm whose keys this object creates, rotates and loads."""
        return self._alg

    def for_alg(self, alg: KeyAlgorithm) -> SigningKeys:
        """The same store and passphrase, for another algorithm's keys."""
        if alg is self._alg:
            return self
        return SigningKeys(
            self._store, passphrase=self._passphrase, previous_passphrase=self._previous, alg=alg
        )

    def ensure_keys(self) -> None:
        """Create a current and a next key if there is no current key yet.

        Refused (`SigningKeyUnavailableError`) when a key is missing and the passphrase
        does not open the one there is: see `_require_live_keys_open`.
        """
        with self._store.transaction() as session:
            serialize_on(session, SIGNING_KEYS_LOCK)
            states = _by_state(session, self._alg)
            if KeyState.CURRENT not in states or KeyState.NEXT not in states:
                self._require_live_keys_open(session)
            if KeyState.CURRENT not in states:
                self._add(session, KeyState.CURRENT)
            if KeyState.NEXT not in states:
                self._add(session, KeyState.NEXT)

    def rotate(self, *, expected_current_kid: str | None = None) -> RotationResult:
        """previous → retired, current → previous, next → current, new next.

        With `expected_current_kid`, rotate only if that key is still current: two
        instances running the same scheduled rotation rotate once, not twice.
        Refused (`SigningKeyUnavailableError`, nothing changed) when the passphrase does
        not open the current and next keys.
        """
        now = self._store.now()
        with self._store.transaction() as session:
            serialize_on(session, SIGNING_KEYS_LOCK)
            states = _by_state(session, self._alg)
            current = states.get(KeyState.CURRENT)
            if expected_current_kid is not None and current != [expected_current_kid]:
                next_kids = states.get(KeyState.NEXT) or [""]
                return RotationResult(
                    rotated=False,
                    current_kid=(current or [""])[0],
                    next_kid=next_kids[0],
                    retired_kids=(),
                )
            self._require_live_keys_open(session)
            retired = tuple(states.get(KeyState.PREVIOUS, []))
            # Retired keys are neither published nor used: their private part goes.
            _move(
                session,
                self._alg,
                KeyState.PREVIOUS,
                KeyState.RETIRED,
                retired_at=now,
                private_key_pem=None,
            )
            _move(session, self._alg, KeyState.CURRENT, KeyState.PREVIOUS)
            if KeyState.NEXT not in states:
                log.warning("no published next signing key: activating an unpublished one")
                self._add(session, KeyState.NEXT)
            _move(session, self._alg, KeyState.NEXT, KeyState.CURRENT, activated_at=now)
            new_next = self._add(session, KeyState.NEXT)
            current_kid = session.scalars(
                select(SigningKey.kid).where(
                    SigningKey.alg == self._alg.value, SigningKey.state == KeyState.CURRENT.value
                )
            ).one()
            return RotationResult(
                rotated=True, current_kid=current_kid, next_kid=new_next, retired_kids=retired
            )

    def publishable(self) -> list[PublishedKey]:
        """The keys the JWKS shows, of every algorithm: current, next, previous."""
        order = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.PREVIOUS: 2}
        with self._store.session() as session:
            rows = session.scalars(
                select(SigningKey).where(SigningKey.state != KeyState.RETIRED.value)
            ).all()
            keys = [
                PublishedKey(
                    kid=r.kid,
                    alg=KeyAlgorithm(r.alg),
                    state=KeyState(r.state),
                    public_jwk=dict(r.public_jwk),
                    created_at=r.created_at,
                    activated_at=r.activated_at,
                )
                for r in rows
            ]
        return sorted(keys, key=lambda k: (order[k.state], k.alg.value, k.created_at))

    def current(self, *, reuse: ActiveSigningKey | None = None) -> ActiveSigningKey:
        """The key to sign with now; `SigningKeyUnavailableError` if none or undecryptable.

        One indexed read. When `reuse` (a key loaded before) is still the current key it
        is returned as it is, without decrypting the stored one again.
        """
        with self._store.session() as session:
            row = _CURRENT.one_or_none(session, {"alg": self._alg.value})
        if row is None:
            raise SigningKeyUnavailableError(
                detail=f"no current {self._alg.value} signing key: run key initialisation"
            )
        kid, pem, encrypted = row
        if reuse is not None and reuse.kid == kid and reuse.alg is self._alg:
            return reuse
        key = self._load(kid, pem, encrypted=encrypted)
        return ActiveSigningKey(kid=kid, alg=self._alg, private_key=key)

    def reencrypt(self) -> list[str]:
        """Store every private key (next, current, previous; all algorithms) encrypted
        under the passphrase, reading each with it, the previous passphrase, or in clear;
        the kids re-encrypted.

        All or nothing: a key that none of them opens raises `SigningKeyUnavailableError`
        naming it, and no key is changed.
        """
        if not self._passphrase:
            raise ValueError("no passphrase set to encrypt the keys under")
        encryption = serialization.BestAvailableEncryption(self._passphrase)
        with self._store.transaction() as session:
            serialize_on(session, SIGNING_KEYS_LOCK)
            rows = session.scalars(
                select(SigningKey)
                .where(SigningKey.private_key_pem.is_not(None))
                .order_by(SigningKey.created_at, SigningKey.kid)
            ).all()
            for row in rows:
                key = self._load(row.kid, str(row.private_key_pem), encrypted=row.encrypted)
                row.private_key_pem = key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
                ).decode("ascii")
                row.encrypted = True
            return [row.kid for row in rows]

    def _load(self, kid: str, pem: str | None, *, encrypted: bool) -> PrivateKey:
        """A stored private key, decrypted with the passphrase or the previous one."""
        if pem is None:  # only a retired key has none, and a current key is never one
            raise SigningKeyUnavailableError(detail=f"signing key {kid} has no private part")
        passwords = [p for p in (self._passphrase, self._previous) if p] if encrypted else [None]
        if not passwords:
            raise SigningKeyUnavailableError(
                detail=f"signing key {kid} is encrypted; no passphrase set"
            )
        for password in passwords:
            try:
                key = serialization.load_pem_private_key(pem.encode("ascii"), password=password)
            except (ValueError, TypeError):
                # A wrong passphrase or a damaged PEM: try the next; never log either.
                continue
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise SigningKeyUnavailableError(
                    detail=f"signing key {kid} has an unsupported type"
                )
            return key
        raise SigningKeyUnavailableError(detail=f"signing key {kid} could not be decrypted")

    def _require_live_keys_open(self, session: Session) -> None:
        """Refuse (`SigningKeyUnavailableError`) to add a key beside current and next
        keys this passphrase does not open.

        A new key is encrypted under this process's passphrase, or made in clear without
        one; it signs after one rotation. Run without the passphrase, or with a mistyped
        one, it would put a key in clear, or one no instance can decrypt, into the
        rotation. Keys made in clear open under any passphrase: setting one later and
        rotating (then `reencrypt`) stays the way to encrypted keys.
        """
        rows = session.execute(
            select(SigningKey.kid, SigningKey.private_key_pem, SigningKey.encrypted).where(
                SigningKey.alg == self._alg.value,
                SigningKey.state.in_((KeyState.CURRENT.value, KeyState.NEXT.value)),
            )
        ).all()
        for kid, pem, encrypted in rows:
            try:
                self._load(kid, pem, encrypted=encrypted)
            except SigningKeyUnavailableError as exc:
                raise SigningKeyUnavailableError(
                    detail=(
                        f"no new {self._alg.value} signing key made: {exc.detail}; set the"
                        " passphrase the current and next keys were made with as"
                        " CAREID_OIDC_SIGNING_KEY_PASSPHRASE ([oidc] signing_key_passphrase)"
                    )
                ) from exc

    def _add(self, session: Session, state: KeyState) -> str:
        key = generate_private_key(self._alg)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode("ascii")
        jwk = public_jwk(key.public_key(), alg=self._alg.value)
        now = self._store.now()
        session.add(
            SigningKey(
                kid=jwk["kid"],
                alg=self._alg.value,
                private_key_pem=pem,
                encrypted=bool(self._passphrase),
                public_jwk=jwk,
                state=state.value,
                created_at=now,
                activated_at=now if state is KeyState.CURRENT else None,
                retired_at=None,
            )
        )
        session.flush()
        return str(jwk["kid"])


# Read on every token issued (see `current`): compiled once, run on the driver's cursor.
_CURRENT = Prepared(
    select(SigningKey.kid, SigningKey.private_key_pem, SigningKey.encrypted).where(
        SigningKey.alg == bindparam("alg"), SigningKey.state == KeyState.CURRENT.value
    )
)


def _by_state(session: Session, alg: KeyAlgorithm) -> dict[KeyState, list[str]]:
    states: dict[KeyState, list[str]] = {}
    for kid, state in session.execute(
        select(SigningKey.kid, SigningKey.state).where(
            SigningKey.alg == alg.value, SigningKey.state != KeyState.RETIRED.value
        )
    ):
        states.setdefault(KeyState(state), []).append(kid)
    return states


def _move(
    session: Session, alg: KeyAlgorithm, source: KeyState, target: KeyState, **values: Any
) -> None:
    session.execute(
        update(SigningKey)
        .where(SigningKey.alg == alg.value, SigningKey.state == source.value)
        .values(state=target.value, **values),
        execution_options={"synchronize_session": False},
    )
