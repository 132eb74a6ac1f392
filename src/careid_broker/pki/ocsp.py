"""The OCSP client (RFC 6960, nonce RFC 8954): ask, verify, cache.

Nonce and cache. With `require_nonce` every request to the responder carries 32 fresh
random bytes and the answer must echo them, so a network attacker cannot replay an old
"good" answer to us. Verified answers are then cached (`ocsp_cache`, shared by every
worker and instance in the broker), keyed by the CertID (issuer name and key hash,
serial), and repeated sign-ins with the same card are served from the cache without a
new nonce. That does not weaken the nonce: the cached answer was itself nonce-checked
when fetched, and it is verified again (signature, freshness) each time it is used.
A "revoked" answer is kept until its nextUpdate; a "good" one for at most
`max_good_age_seconds` (default five minutes) whatever its nextUpdate, because a
Registration Authority that revokes a lost card expects it refused now, not within the
hour a responder may declare. "Unknown" answers and answers without nextUpdate are not
cached.

Back-off (`ocsp_backoff`). A responder that fails is skipped for a while, so that a
responder outage does not cost every sign-in the full timeout. Cached answers are still
served meanwhile; only asking the responder is skipped.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki.config import OcspSettings
from careid_broker.pki.http import HttpFetcher, HttpFetchError
from careid_broker.pki.observer import UNOBSERVED, RevocationObserver
from careid_broker.pki.ocsp_backoff import ResponderBackoff, ResponderStates
from careid_broker.pki.ocsp_cache import MemoryAnswerCache, OcspAnswerCache
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
        answers: OcspAnswerCache | None = None,
        observer: RevocationObserver = UNOBSERVED,
    ) -> None:
        self._settings = settings
        self._observer = observer
        self._clock = clock
        self._http = http
        self._skew = max_clock_skew
        self._cache: OcspAnswerCache = (
            answers if answers is not None else MemoryAnswerCache(settings.cache_max_entries)
        )
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
        cached = self._cached(key, certificate, issuer, now)
        self._observer.cache_lookup(RevocationSource.OCSP, hit=cached is not None)
        if cached is not None:
            answer, location = cached
            return self._conclude(certificate, answer, location, cached=True)
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
            self._observer.fetch_failed(RevocationSource.OCSP)
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
            self._observer.fetch_failed(RevocationSource.OCSP)
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
        self._remember(key, answer, body, url, now)
        return self._conclude(certificate, answer, url, cached=False)

    def cache_size(self) -> int:
        """How many answers are cached (for metrics and tests)."""
        return self._cache.size()

    def clear_cache(self) -> None:
        """Forget every cached answer (e.g. after an emergency revocation)."""
        self._cache.clear()

    def forget(self, certificate: x509.Certificate) -> None:
        """Forget what the cache holds about this certificate: the next check asks."""
        self._cache.forget_serial(certificate.serial_number)

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
    def _key(request: ocsp.OCSPRequest) -> str:
        return (
            f"{request.issuer_name_hash.hex()}:{request.issuer_key_hash.hex()}"
            f":{request.serial_number:x}"
        )

    def _cached(
        self, key: str, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime
    ) -> tuple[OcspAnswer, str] | None:
        kept = self._cache.get(key, now)
        if kept is None:
            return None
        try:
            # Verified again: the cache may be shared (the database), and time moves on.
            answer = verify_response(
                kept.der,
                certificate=certificate,
                issuer=issuer,
                nonce=None,  # checked when it was fetched
                now=now,
                skew=self._skew,
                max_age=self._settings.max_response_age,
            )
        except InvalidOcspResponse as exc:
            logger.warning("ignoring a cached OCSP answer for %s: %s", describe(certificate), exc)
            return None
        return answer, kept.location

    def _remember(
        self, key: str, answer: OcspAnswer, der: bytes, location: str, now: datetime
    ) -> None:
        if answer.next_update is None or answer.status is ocsp.OCSPCertStatus.UNKNOWN:
            return
        expires = answer.next_update
        if answer.status is ocsp.OCSPCertStatus.GOOD:
            expires = min(expires, now + self._settings.max_good_age)
        if expires <= now:
            return
        self._cache.put(key, der=der, location=location, expires=expires)

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
