"""The OCSP client (RFC 6960, nonce RFC 8954): ask, verify, cache until nextUpdate.

Nonce and cache. With `require_nonce` every request to the responder carries 32 fresh
random bytes and the answer must echo them, so a network attacker cannot replay an old
"good" answer to us. Verified good/revoked answers are then cached until their
nextUpdate, keyed by the CertID (issuer name and key hash, serial), and repeated
sign-ins with the same card are served from the cache without a new nonce. That does not
weaken the nonce: the cached answer was itself nonce-checked when fetched, and the
responder (the CA's policy) declared it valid until nextUpdate — the same window any
relying party without a nonce, or with a CRL, accepts. A revocation made inside that
window is seen at the latest at nextUpdate, as with a CRL. "Unknown" answers and answers
without nextUpdate are not cached.

Back-off (`ocsp_backoff`). A responder that fails is skipped for a while, so that a
responder outage does not cost every sign-in the full timeout. Cached answers are still
served meanwhile; only asking the responder is skipped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki.config import OcspSettings
from careid_broker.pki.http import HttpFetcher, HttpFetchError
from careid_broker.pki.ocsp_backoff import ResponderBackoff, ResponderStates
from careid_broker.pki.ocsp_response import (
    InvalidOcspResponse,
    OcspAnswer,
    OcspResponderUnusable,
    request_der,
    verify_response,
)
from careid_broker.pki.status import (
    Clock,
    RevocationSource,
    RevocationStatus,
    describe,
    utc_now,
)

logger = logging.getLogger(__name__)

#: RFC 8954 §2.1: at most 32 octets; RFC 8954 recommends 32 for unpredictability.
NONCE_LENGTH = 32
OCSP_REQUEST_TYPE = "application/ocsp-request"

_CacheKey = tuple[bytes, bytes, int]


@dataclass(frozen=True, kw_only=True)
class _Cached:
    answer: OcspAnswer
    location: str
    expires: datetime


def ocsp_urls(certificate: x509.Certificate) -> list[str]:
    """The certificate's AIA OCSP responder URLs (RFC 5280 §4.2.2.1), http(s) only."""
    try:
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
    except x509.ExtensionNotFound:
        return []
    return [
        description.access_location.value
        for description in access
        if description.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(description.access_location, x509.UniformResourceIdentifier)
        and description.access_location.value.lower().startswith(("http://", "https://"))
    ]


class OcspClient:
    """Asks the responder about one certificate and answers good, or raises."""

    def __init__(
        self,
        settings: OcspSettings,
        *,
        clock: Clock,
        http: HttpFetcher,
        max_clock_skew: timedelta,
        responder_states: ResponderStates | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._http = http
        self._skew = max_clock_skew
        self._lock = threading.Lock()
        self._cache: OrderedDict[_CacheKey, _Cached] = OrderedDict()
        self.backoff = ResponderBackoff(settings.failure_backoff, responder_states)

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """The "good" status; revoked or unknown: CertificateRevokedError.

        Raises RevocationUnavailableError when no trustworthy, fresh answer was obtained
        (no responder, network failure, timeout, bad signature, nonce, staleness).
        """
        now = utc_now(self._clock)
        # RFC 6960's CertID default, which every responder answers: SHA-1 here only
        # names the issuer (and keys our cache); it signs nothing.
        cert_id_hash = hashes.SHA1()  # noqa: S303
        builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, cert_id_hash)
        key = self._key(builder.build())
        cached = self._cached(key, now)
        if cached is not None:
            return self._conclude(certificate, cached.answer, cached.location, cached=True)
        url = self._responder_url(certificate)
        skipped = self.backoff.skip_reason(url, now)
        if skipped is not None:
            raise RevocationUnavailableError(
                detail=f"OCSP responder {url} not asked about {describe(certificate)}: {skipped}"
            )
        nonce = os.urandom(NONCE_LENGTH) if self._settings.nonce_required_for(url) else None
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        try:
            body = self._http.post(
                url,
                request_der(builder.build()),
                OCSP_REQUEST_TYPE,
                self._settings.timeout_seconds,
            )
        except (HttpFetchError, OSError) as exc:
            self.backoff.failed(url, utc_now(self._clock), str(exc))
            raise RevocationUnavailableError(
                detail=f"OCSP responder {url} unreachable for {describe(certificate)}: {exc}"
            ) from exc
        try:
            answer = verify_response(
                body,
                certificate=certificate,
                issuer=issuer,
                nonce=nonce,
                now=now,
                skew=self._skew,
                max_age=self._settings.max_response_age,
            )
        except InvalidOcspResponse as exc:
            # An answer we cannot trust tells us nothing: the same as no answer. Logged
            # loudly because a bad signature or nonce can mean an attack.
            logger.error("rejected OCSP response from %s: %s", url, exc)
            if isinstance(exc, OcspResponderUnusable):
                self.backoff.failed(url, utc_now(self._clock), str(exc))
            else:
                # It answered, about this one card: the responder itself is up, and one
                # odd card must not turn it off for everyone else.
                self.backoff.answered(url, utc_now(self._clock))
            raise RevocationUnavailableError(
                detail=f"OCSP response from {url} for {describe(certificate)} rejected: {exc}"
            ) from exc
        self.backoff.answered(url, utc_now(self._clock))
        self._remember(key, answer, url)
        return self._conclude(certificate, answer, url, cached=False)

    def cache_size(self) -> int:
        """How many answers are cached (for metrics and tests)."""
        with self._lock:
            return len(self._cache)

    def clear_cache(self) -> None:
        """Forget every cached answer (e.g. after an emergency revocation)."""
        with self._lock:
            self._cache.clear()

    def _responder_url(self, certificate: x509.Certificate) -> str:
        if self._settings.responder_url is not None:
            return self._settings.responder_url
        urls = ocsp_urls(certificate)
        if not urls:
            raise RevocationUnavailableError(
                detail=f"{describe(certificate)} names no OCSP responder and none is configured"
            )
        return urls[0]

    @staticmethod
    def _key(request: ocsp.OCSPRequest) -> _CacheKey:
        return request.issuer_name_hash, request.issuer_key_hash, request.serial_number

    def _cached(self, key: _CacheKey, now: datetime) -> _Cached | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if now >= entry.expires:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry

    def _remember(self, key: _CacheKey, answer: OcspAnswer, location: str) -> None:
        if answer.next_update is None or answer.status is ocsp.OCSPCertStatus.UNKNOWN:
            return
        limit = self._settings.cache_max_entries
        if limit == 0:
            return
        with self._lock:
            self._cache[key] = _Cached(answer=answer, location=location, expires=answer.next_update)
            self._cache.move_to_end(key)
            while len(self._cache) > limit:
                self._cache.popitem(last=False)

    @staticmethod
    def _conclude(
        certificate: x509.Certificate, answer: OcspAnswer, location: str, *, cached: bool
    ) -> RevocationStatus:
        if answer.status is ocsp.OCSPCertStatus.REVOKED:
            reason = answer.revocation_reason.value if answer.revocation_reason else "unspecified"
            when = answer.revocation_time.isoformat() if answer.revocation_time else "unknown"
            raise CertificateRevokedError(
                detail=f"OCSP ({location}): {describe(certificate)} revoked at {when}"
                f" ({reason}); signed by {answer.signer}"
            )
        if answer.status is ocsp.OCSPCertStatus.UNKNOWN:
            # RFC 6960 §2.2 "unknown": the responder does not know the certificate. A CA
            # that does not know a certificate it supposedly issued is a red flag (a
            # forgery made with a stolen key, say), so it is refused like a revocation.
            raise CertificateRevokedError(
                detail=f"OCSP ({location}): {describe(certificate)} is unknown to the"
                f" responder; treated as revoked"
            )
        return RevocationStatus(
            source=RevocationSource.OCSP,
            cached=cached,
            this_update=answer.this_update,
            next_update=answer.next_update,
            location=location,
        )
