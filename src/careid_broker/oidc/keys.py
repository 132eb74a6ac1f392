"""The OP's JWKS and JWT signing, over the store's rotating signing keys.

The JWKS publishes every key in state next, current or previous, of every algorithm
(an RP caching it already knows the next key before it signs anything, and still knows
the previous one while tokens it signed are alive). Tokens are signed with the current
key of the algorithm the client registered (RS256 by default, ES256 per client), with
its `kid` in the header so RPs pick the right key.

`/readyz` asks `ready()` whether the current keys can be loaded and decrypted: a wrong
passphrase otherwise leaves an instance in the load balancer that fails every token
request. The answer is kept for a few seconds, so frequent probes cost no decryption.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from careid_broker.errors import BrokerError
from careid_broker.store import ActiveSigningKey, KeyAlgorithm, SigningKeys

log = logging.getLogger(__name__)

# How long a readiness answer (good or bad) is reused: long enough that probes every
# second or two decrypt nothing, short enough that a fixed passphrase shows at once.
READY_CHECK_SECONDS = 10.0
READY = "ok"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Loaded:
    active: ActiveSigningKey
    key: RSAKey | ECKey


def _joserfc_key(active: ActiveSigningKey) -> RSAKey | ECKey:
    if isinstance(active.private_key, rsa.RSAPrivateKey):
        return RSAKey.import_key(active.private_key)
    return ECKey.import_key(active.private_key)


class TokenSigner:
    """Sign JWTs with the current key of an algorithm; publish and verify with the JWKS."""

    def __init__(
        self,
        keys_for: Callable[[KeyAlgorithm], SigningKeys],
        *,
        ensure: frozenset[KeyAlgorithm] = frozenset(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys_for = keys_for
        # Keys the clients need, made on first use rather than at start-up: a broker
        # must start (and say it is not ready) while its database is down.
        self._missing = set(ensure)
        self._ensure_lock = threading.Lock()
        self._monotonic = monotonic
        # The decrypted current key per algorithm, used while it is still current.
        self._cache: dict[KeyAlgorithm, _Loaded] = {}
        self._lock = threading.Lock()
        # What ready() checks: the algorithms the clients sign with (RS256 at least,
        # the JWKS's and the default).
        self._algorithms = frozenset(ensure) | {KeyAlgorithm.RS256}
        self._ready_seconds = READY_CHECK_SECONDS
        self._readiness: tuple[str, float] | None = None

    def ensure_keys(self) -> None:
        """Create a current and a next key for each algorithm the clients need that has
        none yet (once per process; again after a failure)."""
        if not self._missing:
            return
        with self._ensure_lock:
            for alg in sorted(self._missing):
                self._keys_for(alg).ensure_keys()
                self._missing.discard(alg)

    def jwks(self) -> dict[str, Any]:
        """The public JWK set to serve at the jwks_uri."""
        self.ensure_keys()
        keys = self._keys_for(KeyAlgorithm.RS256).publishable()
        return {"keys": [dict(k.public_jwk) for k in keys]}

    def verification_keys(self) -> KeySet:
        """The published keys as a joserfc KeySet (to check our own ID tokens)."""
        return KeySet.import_key_set(self.jwks())  # type: ignore[arg-type]

    def current(self, alg: KeyAlgorithm) -> tuple[str, RSAKey | ECKey]:
        """The kid and private key to sign with now: the key the store holds as current.

        Asked of the store on every call (one indexed read), so a rotation made by any
        instance is signed with from the next token on, and a key retired (its private
        part erased: the answer to a key believed exposed) never signs again here. Only
        the decryption is saved while the key stays current.
        """
        self.ensure_keys()
        with self._lock:
            cached = self._cache.get(alg)
        active = self._keys_for(alg).current(reuse=cached.active if cached else None)
        if cached is not None and active is cached.active:
            return active.kid, cached.key
        loaded = _Loaded(active=active, key=_joserfc_key(active))
        with self._lock:
            self._cache[alg] = loaded
        return active.kid, loaded.key

    def ready(self) -> str:
        """`READY`, or the error code of why a current key cannot sign (fails closed).

        Loads (creating if there are none yet, as the first token request would) and
        decrypts the current key of each algorithm in use; the answer is reused for
        `READY_CHECK_SECONDS`.
        """
        now = self._monotonic()
        with self._lock:
            if self._readiness is not None and now - self._readiness[1] < self._ready_seconds:
                return self._readiness[0]
        answer = READY
        for alg in sorted(self._algorithms):
            try:
                self.current(alg)
            except BrokerError as exc:
                # The detail names the key and what is wrong, never the passphrase.
                log.warning(
                    "signing key not usable: %s",
                    exc.detail or exc.code.value,
                    extra={"error_code": exc.code.value, "alg": alg.value},
                )
                answer = exc.code.value
                break
        with self._lock:
            self._readiness = (answer, now)
        return answer

    def sign(self, claims: Mapping[str, Any], *, alg: KeyAlgorithm, typ: str = "JWT") -> str:
        """A compact JWS over the claims, with `kid` and `typ` in the header."""
        kid, key = self.current(alg)
        header = {"alg": alg.value, "kid": kid, "typ": typ}
        return jwt.encode(header, dict(claims), key, algorithms=[alg.value])

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT signed by one of our published keys, else None.

        Only the signature is checked; the caller judges the claims (an expired ID
        token is still a fine logout hint, OIDC RP-Initiated Logout §2).
        """
        try:
            decoded = jwt.decode(
                token,
                self.verification_keys(),
                algorithms=[alg.value for alg in KeyAlgorithm],
            )
        except (JoseError, ValueError):
            return None
        return dict(decoded.claims)
