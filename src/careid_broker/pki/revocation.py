"""Revocation by the deployment's choice: `ocsp`, `crl` or `ocsp-then-crl`; soft-fail.

The card's certificate is checked by the configured mode; then the CA certificates of
its chain, on their issuers' CRLs whatever the mode (`careid_broker.pki.authorities`).

Fail closed by default: no trustworthy, fresh status means no sign-in. With `soft_fail`
an unobtainable status (the card's or a CA's) is accepted, but never silently: a warning
is logged and the outcome says so, for the caller to audit. A definite "revoked" is
never softened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509

from careid_broker.errors import RevocationUnavailableError
from careid_broker.pki.authorities import AuthorityRevocation
from careid_broker.pki.config import PkiConfig, RevocationMode
from careid_broker.pki.crl import CrlCache
from careid_broker.pki.http import HttpFetcher
from careid_broker.pki.ocsp import OcspClient
from careid_broker.pki.sharing import PROCESS_ONLY, RevocationSharing
from careid_broker.pki.status import Clock, RevocationStatus, describe

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RevocationOutcome:
    """The certificate is not known to be revoked: by which status, or by soft-fail."""

    status: RevocationStatus | None
    """The card's status; None when soft-fail accepted the card without one."""
    soft_fail_used: bool = False
    soft_fail_reason: str | None = None


class RevocationChecker:
    """Runs the configured revocation checks for a certificate and its issuer."""

    def __init__(
        self,
        config: PkiConfig,
        *,
        clock: Clock,
        http: HttpFetcher,
        sharing: RevocationSharing = PROCESS_ONLY,
    ) -> None:
        self._mode = config.revocation
        self._soft_fail = config.soft_fail
        skew: timedelta = config.max_clock_skew
        self.ocsp = OcspClient(
            config.ocsp,
            clock=clock,
            http=http,
            max_clock_skew=skew,
            responder_states=sharing.responders,
            answers=sharing.answers,
            observer=sharing.observer,
        )
        self.crl = CrlCache(
            config.crl,
            clock=clock,
            http=http,
            max_clock_skew=skew,
            on_revoked=sharing.on_revoked,
            observer=sharing.observer,
            shared=sharing.crls,
        )
        self.authorities = AuthorityRevocation(
            self.crl, use_distribution_points=config.crl.use_distribution_points
        )
        if self._soft_fail:
            logger.warning(
                "revocation soft-fail is ON: cards whose revocation status cannot be"
                " obtained will be accepted (each such sign-in is logged and audited)"
            )

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> RevocationOutcome:
        """A good status, or a soft-fail outcome; raises revoked / unavailable errors."""
        try:
            return RevocationOutcome(status=self._status(certificate, issuer))
        except RevocationUnavailableError as exc:
            reason = self._softened(exc, f"{describe(certificate)} without a revocation status")
            return RevocationOutcome(status=None, soft_fail_used=True, soft_fail_reason=reason)

    def check_chain(self, chain: tuple[x509.Certificate, ...]) -> RevocationOutcome:
        """The card (`chain[0]`) by the configured mode, then each CA certificate below the
        trust anchor (`chain[-1]`) by its issuer's CRL; soft-fail as in `check`, the
        outcome's reason naming the CA."""
        outcome = self.check(chain[0], chain[1])
        try:
            self.authorities.check(chain)
        except RevocationUnavailableError as exc:
            reason = self._softened(
                exc, f"{describe(chain[0])} without the revocation status of its CA"
            )
            reasons = [r for r in (outcome.soft_fail_reason, reason) if r]
            return RevocationOutcome(
                status=outcome.status, soft_fail_used=True, soft_fail_reason="; ".join(reasons)
            )
        return outcome

    def _softened(self, exc: RevocationUnavailableError, accepting: str) -> str:
        """Soft-fail's reason for accepting without a status, logged; else `exc` raised."""
        if not self._soft_fail:
            raise exc
        reason = exc.detail or exc.message
        logger.warning("SOFT-FAIL: accepting %s: %s", accepting, reason)
        return reason

    def _status(self, certificate: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        if self._mode is RevocationMode.CRL:
            return self.crl.check(certificate, issuer)
        if self._mode is RevocationMode.OCSP:
            return self.ocsp.check(certificate, issuer)
        try:
            return self.ocsp.check(certificate, issuer)
        except RevocationUnavailableError as ocsp_failure:
            logger.info("OCSP unavailable, trying the CRL: %s", ocsp_failure.detail)
            try:
                return self.crl.check(certificate, issuer)
            except RevocationUnavailableError as crl_failure:
                raise RevocationUnavailableError(
                    detail=f"{ocsp_failure.detail}; then {crl_failure.detail}"
                ) from crl_failure

    def start(self) -> None:
        """Start background work: the CRL refresh, in every mode, since CA certificates
        are checked on CRLs even where cards are checked by OCSP (it holds no CRL, and
        fetches none, until a check has needed one)."""
        self.crl.start()

    def stop(self) -> None:
        """Stop background work."""
        self.crl.stop()
