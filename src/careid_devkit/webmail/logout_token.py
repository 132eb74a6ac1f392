"""Validate an OpenID Connect Back-Channel Logout 1.0 logout token (§2.4, §2.6).

Every check here is one the spec names; the order follows §2.6 so that the cheapest
refusals come first and a token only reaches the replay cache once it is known to be
genuine (a forged token must not be able to "use up" a real token's jti).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from careid_devkit.webmail.errors import LogoutTokenError

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# §2.4 recommends explicit typing; without it, an ID token could be passed off as a
# logout token. A token with no `typ` is still accepted (older OPs), any other refused.
ACCEPTED_TYPES = frozenset({"logout+jwt", "application/logout+jwt"})
# Only public-key algorithms: a logout token must prove it came from the OP.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN_LENGTH = 16_384


class KeySource(Protocol):
    """The OP's published signing keys and the algorithms it signs with."""

    def key_set(self, *, refresh: bool = False) -> KeySet:
        """The JWKS; `refresh` asks for a fresh copy (a key the cache does not know)."""
        ...

    def signing_algorithms(self) -> Collection[str]:
        """`id_token_signing_alg_values_supported` from the OP's metadata."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class LogoutRequest:
    """A validated logout token: which OP session (`sid`) and/or user (`sub`) ended."""

    sid: str | None
    sub: str | None
    jti: str


class JtiCache:
    """The jti values seen recently (§2.6 step 7: replay detection), bounded in size."""

    def __init__(self, *, clock: Callable[[], datetime], max_entries: int = 10_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._seen: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def first_use(self, issuer: str, jti: str, *, keep_until: datetime) -> bool:
        """Record a jti; False when it was already recorded (a replay)."""
        now = self._clock()
        key = (issuer, jti)
        with self._lock:
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                return False
            if len(self._seen) >= self._max:
                for stale in [k for k, until in self._seen.items() if until <= now]:
                    del self._seen[stale]
                while len(self._seen) >= self._max:
                    # A token this old is past max_age anyway: refused on its iat.
                    del self._seen[min(self._seen, key=self._seen.__getitem__)]
            self._seen[key] = keep_until
            return True


class LogoutTokenValidator:
    """§2.6 validation of one logout token for one client of one OP."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        keys: KeySource,
        clock: Callable[[], datetime],
        max_age: timedelta,
        clock_skew: timedelta,
        replay: JtiCache,
    ) -> None:
        self._issuer = issuer
        self._client_id = client_id
        self._keys = keys
        self._clock = clock
        self._max_age = max_age
        self._skew = clock_skew
        self._replay = replay

    def validate(self, token: str) -> LogoutRequest:
        """The logout request the token carries, or `LogoutTokenError` naming the check."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise LogoutTokenError("logout_token is missing or too long")
        if token.count(".") != 2:
            # §2.6 step 1 allows an encrypted token only when the RP registered for
            # one; this client did not, so a JWE (five parts) is refused too.
            raise LogoutTokenError("logout_token is not a compact JWS")
        decoded = self._verify_signature(token)
        typ = decoded.header.get("typ")
        if typ is not None and str(typ).lower() not in ACCEPTED_TYPES:
            raise LogoutTokenError(f"logout_token has typ {typ!r}, not logout+jwt")
        claims = decoded.claims
        self._check_registered_claims(claims)
        now = self._clock()
        iat = claims["iat"]
        if now.timestamp() - iat > self._max_age.total_seconds():
            raise LogoutTokenError("logout_token is too old (iat)")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
            raise LogoutTokenError("logout_token has no back-channel logout event")
        if "nonce" in claims:
            raise LogoutTokenError("logout_token carries a nonce (it may be an ID token)")
        sid = _optional_string(claims, "sid")
        sub = _optional_string(claims, "sub")
        if sid is None and sub is None:
            raise LogoutTokenError("logout_token names neither sid nor sub")
        jti = claims["jti"]
        keep_until = datetime.fromtimestamp(iat, tz=now.tzinfo) + self._max_age + self._skew
        if not self._replay.first_use(self._issuer, jti, keep_until=keep_until):
            raise LogoutTokenError("logout_token was already used (jti replayed)")
        return LogoutRequest(sid=sid, sub=sub, jti=jti)

    def _verify_signature(self, token: str) -> jwt.Token:
        algorithms = [a for a in self._keys.signing_algorithms() if a in ASYMMETRIC_ALGORITHMS]
        if not algorithms:
            raise LogoutTokenError("the OP advertises no public-key signing algorithm")
        try:
            try:
                return jwt.decode(token, self._keys.key_set(), algorithms=algorithms)
            except InvalidKeyIdError:
                # The OP may have rotated its keys since they were fetched.
                return jwt.decode(token, self._keys.key_set(refresh=True), algorithms=algorithms)
        except JoseError as exc:
            raise LogoutTokenError(f"logout_token signature not valid ({exc.error})") from exc
        except ValueError as exc:  # malformed base64 or JSON inside the token
            raise LogoutTokenError("logout_token could not be parsed") from exc

    def _check_registered_claims(self, claims: dict[str, Any]) -> None:
        registry = JWTClaimsRegistry(
            now=int(self._clock().timestamp()),
            leeway=int(self._skew.total_seconds()),
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._client_id},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise LogoutTokenError(f"logout_token claim check failed ({exc})") from exc
        if not isinstance(claims["jti"], str):
            raise LogoutTokenError("logout_token jti is not a string")
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self._client_id:
            # Several audiences are allowed, as for ID tokens, but then this client
            # must be the authorised party.
            raise LogoutTokenError("logout_token has several audiences and no matching azp")


def _optional_string(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise LogoutTokenError(f"logout_token {name} is not a non-empty string")
    return value
