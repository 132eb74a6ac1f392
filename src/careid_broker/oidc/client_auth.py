"""JWT client authentication (OIDC Core §9, RFC 7523 §2.2) on authlib.

`private_key_jwt`: the client signs a short JWT with its own key (RS256/384/512,
PS256/384/512, ES256/384/512); we check it against the public keys declared for it in
clients.toml (`jwks` inline, or `jwks_uri`: a file or an https URL, fetched with a
timeout and cached; read again at once for a `kid` not among the keys read, at most once
an interval; if it cannot be read again, the keys last read serve for a bounded time,
then the client is refused).
`client_secret_jwt`: the JWT is an HMAC (HS256/384/512) under the secret shared with
the client (`secret_file` / `secret_env`).

Both arrive as the same `client_assertion`; the JWS header's `alg` says which it is, and
each handler leaves the other's alone. Each checks the signature under its own
algorithms only, and a key only under the algorithms of its type (an RSA key is never an
HMAC secret; `none` is no algorithm). Each assertion's `jti` is accepted once (stored
until the last moment the assertion could still be accepted), so a captured assertion
cannot be replayed.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, KeySet, OctKey

from careid_broker.oidc.clients import AuthMethod
from careid_broker.oidc.errors import ClientKeysUnavailableError
from careid_broker.oidc.models import OAuthClient
from careid_broker.store import UsedJtis

log = logging.getLogger(__name__)

JWKS_CACHE_SECONDS = 300.0
# When the jwks_uri cannot be read, the keys last read keep serving until they are this
# old (5 minutes past the cache), then the client is refused. A host briefly down locks
# no one out; keys the RP withdrew (a stolen key) are not accepted for ever by the
# instances that happened to read them, while the others refuse them.
JWKS_STALE_IF_ERROR_SECONDS = 2 * JWKS_CACHE_SECONDS
JWKS_MAX_BYTES = 256 * 1024
# An assertion naming a kid the keys read do not hold (the RP published a new key and
# signs with it) makes the worker read the jwks_uri again at once, but at most once in
# this many seconds per jwks_uri: assertions naming random kids cannot make the broker
# hammer the RP's host.
JWKS_UNKNOWN_KID_INTERVAL_SECONDS = 30.0
# An assertion valid for longer than this is refused: a jti must be remembered for the
# whole validity, and RFC 7523 expects "a short time" anyway.
MAX_ASSERTION_LIFETIME = timedelta(minutes=10)
# The JWS algorithms a client assertion may be signed with (RFC 7518 §3.1), per method.
# Named, never joserfc's default "recommended" set (RS256, ES256, HS256 only), which
# would refuse the RS512 and PS256 that NHS signed-JWT integrations use.
PRIVATE_KEY_JWT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
CLIENT_SECRET_JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
#: The least secret each HMAC takes: as long as its hash (RFC 7518 §3.2).
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def fetch_jwks(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Read a JWK set from a file:// or http(s):// URL (bounded size)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - from config
        body = response.read(JWKS_MAX_BYTES + 1)
    if len(body) > JWKS_MAX_BYTES:
        raise ValueError("JWK set larger than 256 KiB")
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("a JWK set must be a JSON object")
    return value


class ClientKeyResolver:
    """The public keys of a client: inline, or fetched from `jwks_uri` and cached (and
    read again, at most once an interval, for a `kid` the keys read do not hold)."""

    def __init__(
        self,
        *,
        fetch: Callable[[str], dict[str, Any]] = fetch_jwks,
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = JWKS_CACHE_SECONDS,
        stale_if_error_seconds: float = JWKS_STALE_IF_ERROR_SECONDS,
        unknown_kid_interval_seconds: float = JWKS_UNKNOWN_KID_INTERVAL_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._stale_if_error_seconds = max(stale_if_error_seconds, cache_seconds)
        self._unknown_kid_interval_seconds = unknown_kid_interval_seconds
        self._cache: dict[str, tuple[float, KeySet]] = {}
        # When each jwks_uri was last read again for a kid its keys did not hold.
        self._unknown_kid_reads: dict[str, float] = {}
        self._lock = threading.Lock()

    def keys_for(self, client: OAuthClient, *, kid: str | None = None) -> KeySet:
        """The client's KeySet; `ClientKeysUnavailableError` when it cannot be had.

        `kid`: the key the assertion names. Keys read from a `jwks_uri` that do not hold
        it are read again at once, unless they were read again for that reason less than
        the interval ago.
        """
        record = client.record
        if record.jwks is not None:
            return KeySet.import_key_set(dict(record.jwks))  # type: ignore[arg-type]
        if record.jwks_uri is None:
            raise ClientKeysUnavailableError(detail=f"{record.client_id}: no keys declared")
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(record.jwks_uri)
            if cached is not None and now - cached[0] < self._cache_seconds:
                if kid is None or any(key.kid == kid for key in cached[1].keys):
                    return cached[1]
                last = self._unknown_kid_reads.get(record.jwks_uri)
                if last is not None and now - last < self._unknown_kid_interval_seconds:
                    return cached[1]  # the assertion is refused: no key for its kid
                # Claimed under the lock: of many such assertions at once, one reads.
                self._unknown_kid_reads[record.jwks_uri] = now
                log.info(
                    "jwks_uri of %s read again: the client assertion names a key not"
                    " among those read %.0f s ago",
                    record.client_id,
                    now - cached[0],
                )
        try:
            key_set = KeySet.import_key_set(self._fetch(record.jwks_uri))  # type: ignore[arg-type]
        except (OSError, ValueError, JoseError) as exc:
            if cached is not None and now - cached[0] < self._stale_if_error_seconds:
                # A JWKS host that is briefly down should not lock the client out.
                log.warning(
                    "jwks_uri of %s unavailable (%s); using the keys read %.0f s ago",
                    record.client_id,
                    type(exc).__name__,
                    now - cached[0],
                )
                return cached[1]
            last_read = (
                ""
                if cached is None
                else f"; its keys were last read {now - cached[0]:.0f} s ago, kept at most"
                f" {self._stale_if_error_seconds:.0f} s while it cannot be read"
            )
            raise ClientKeysUnavailableError(
                detail=f"{record.client_id}: {type(exc).__name__}: {exc}{last_read}"
            ) from exc
        with self._lock:
            self._cache[record.jwks_uri] = (now, key_set)
        return key_set


def client_secret_basic(query_client: Any, request: Any) -> OAuthClient | None:
    """authlib's client_secret_basic, refusing credentials that are not UTF-8.

    RFC 6749 §2.3.1 form-encodes the client id and secret as UTF-8; authlib decodes the
    header without catching bytes that are not, which would otherwise be a 500.
    """
    try:
        client: OAuthClient | None = authenticate_client_secret_basic(query_client, request)
    except UnicodeDecodeError as exc:
        raise InvalidClientError(
            status_code=401,
            description="The client id and secret in the Authorization header must be"
            " UTF-8, form-encoded (RFC 6749 section 2.3.1).",
        ) from exc
    return client


class _ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """authlib's RFC 7523 client assertion check, with our audience and jti store."""

    #: True for the HMAC method: it takes only HS* assertions, the other only the rest.
    HMAC = False
    #: The algorithms its assertions' signatures are checked under.
    ALGORITHMS: tuple[str, ...] = PRIVATE_KEY_JWT_ALGORITHMS

    def __init__(
        self,
        *,
        audiences: list[str],
        resolver: ClientKeyResolver,
        jtis: UsedJtis,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(validate_jti=True, leeway=60)
        self._audiences = audiences
        self._resolver = resolver
        self._jtis = jtis
        self._clock = clock

    def __call__(self, query_client: Any, request: Any) -> OAuthClient | None:
        assertion = request.form.get("client_assertion")
        if request.form.get("client_assertion_type") == self.CLIENT_ASSERTION_TYPE and assertion:
            headers, claims = self.extract_assertion(assertion)
            alg = headers.get("alg")
            if not isinstance(alg, str):
                raise InvalidClientError(
                    status_code=401,
                    description="The client assertion's header must name its signing"
                    " algorithm (alg) as a string.",
                )
            if (alg in CLIENT_SECRET_JWT_ALGORITHMS) is not self.HMAC:
                return None  # the other JWT method's assertion
            named = request.form.get("client_id")
            if named is not None and named != claims.get("sub"):
                # RFC 7521 §4.2: a client_id in the request must be the client the
                # assertion authenticates; refused before its jti is spent.
                raise InvalidClientError(
                    status_code=401,
                    description="client_id names another client than the client"
                    " assertion's issuer and subject (RFC 7521 section 4.2).",
                )
        client: OAuthClient | None = super().__call__(query_client, request)
        return client

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        # authlib's, with the method's algorithms named: left to itself joserfc takes
        # only its "recommended" few. The alg is checked against them before any key is
        # looked up, and each algorithm checks the key's type (and curve) against its own.
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=self.ALGORITHMS)
        except JoseError as exc:
            log.debug("client assertion refused: %r", exc)
            raise InvalidClientError(description=exc.description) from exc
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self) -> list[str]:
        # RFC 7523 §3: the issuer or the token endpoint URL identify us.
        return list(self._audiences)

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        now = self._clock()
        exp = claims.get("exp")
        # A NumericDate is a finite number (RFC 7519 §2). A bool is an int to Python and
        # NaN compares false with everything, so neither may reach the checks below.
        if (
            isinstance(exp, bool)
            or not isinstance(exp, int | float)
            or (isinstance(exp, float) and not math.isfinite(exp))
        ):
            raise InvalidClientError(
                description="The client assertion's exp must be a number of seconds."
            )
        now_seconds = now.timestamp()
        # Compared as numbers, before any datetime is made: an exp no calendar holds
        # (year 33658, 1e300) is an assertion valid for too long like any other. (An int
        # compares exactly with a float however large; subtracting one could overflow.)
        if exp > now_seconds + MAX_ASSERTION_LIFETIME.total_seconds():
            raise InvalidClientError(description="The client assertion is valid for too long.")
        # joserfc accepts the assertion while exp > int(now) - leeway: it truncates now,
        # so an exp of x.5 is accepted until ceil(exp) + leeway, half a second after
        # exp + leeway. The jti is remembered that long, and a second more for the
        # rounding between this clock and the library's (time.time()): were the row gone
        # while the library still accepts the assertion, it could be replayed.
        accepted_until = math.ceil(exp) + self.leeway
        if now_seconds >= accepted_until:
            # The library refused it already; should the clocks disagree, still refused.
            raise InvalidClientError(description="The client assertion has expired.")
        return self._jtis.use_once(
            scope=f"client_assertion:{claims['sub']}",
            jti=str(jti),
            # Within MAX_ASSERTION_LIFETIME + leeway of now: a time a datetime holds.
            expires_at=datetime.fromtimestamp(accepted_until + 1, UTC),
        )


class PrivateKeyJwt(_ClientAssertion):
    """private_key_jwt: the assertion is signed with one of the client's declared keys."""

    CLIENT_AUTH_METHOD = AuthMethod.PRIVATE_KEY_JWT.value

    def resolve_client_public_key(self, client: OAuthClient) -> Callable[[GuestProtocol], KeySet]:
        if not client.record.allows_auth_method(self.CLIENT_AUTH_METHOD):
            raise InvalidClientError(
                description=f"The client cannot authenticate with {self.CLIENT_AUTH_METHOD}."
            )

        def keys_naming(assertion: GuestProtocol) -> KeySet:
            # Called by joserfc once the alg is found allowed, with the header in hand:
            # its kid may make the resolver read the client's jwks_uri again.
            kid = assertion.headers().get("kid")
            try:
                return self._resolver.keys_for(client, kid=kid if isinstance(kid, str) else None)
            except ClientKeysUnavailableError as exc:
                log.warning("private_key_jwt: %s", exc)
                raise InvalidClientError(
                    description="The client's keys could not be loaded."
                ) from exc

        return keys_naming


class ClientSecretJwt(_ClientAssertion):
    """client_secret_jwt: the assertion is an HMAC under the secret shared with the client."""

    CLIENT_AUTH_METHOD = AuthMethod.CLIENT_SECRET_JWT.value
    HMAC = True
    ALGORITHMS = CLIENT_SECRET_JWT_ALGORITHMS

    def resolve_client_public_key(self, client: OAuthClient) -> Callable[[GuestProtocol], OctKey]:
        secret = client.record.jwt_secret
        if secret is None or not client.record.allows_auth_method(self.CLIENT_AUTH_METHOD):
            # Checked before the signature, so no jti is spent on a client that may not
            # use this method.
            raise InvalidClientError(
                description=f"The client cannot authenticate with {self.CLIENT_AUTH_METHOD}."
            )
        key = OctKey.import_key(secret)
        size = len(key.raw_value)

        def key_for(assertion: GuestProtocol) -> OctKey:
            # RFC 7518 §3.2: an HMAC key at least as long as the hash. The secret may be
            # as short as 32 bytes, enough for HS256 only.
            alg = assertion.headers().get("alg")
            least = HMAC_KEY_BYTES.get(alg, 0) if isinstance(alg, str) else 0
            if size < least:
                raise InvalidClientError(
                    description=f"The client's secret is too short for {alg}: it needs at"
                    f" least {least} bytes (RFC 7518 section 3.2). Sign with HS256, or"
                    " give the client a longer secret."
                )
            return key

        return key_for
