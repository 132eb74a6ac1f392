"""A card revoked while its holder is signed in: its sessions end, its services are told;
and an administrator's "check this card now" / "refresh the CRLs now".

The CRL refresher (and any CRL fetched at a sign-in) reports the certificates a new CRL
lists; the cards registered with one of them lose every session they opened, with
back-channel logout to each relying party, as when the card is pulled out. A
Registration Authority that revokes a lost card should not have to wait for the thief
to sign out.

An administrator's "refresh the CRLs now" fetches every CRL the configuration and the
registered cards name and ends the sessions of the cards each lists. It does not reach
the CRLs the running workers hold in memory: they fetch theirs afresh on their own
schedule (`[pki.crl] refresh_seconds`, and before each CRL's nextUpdate); the sessions
it ends are in the store, so every worker sees them at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum, unique

from cryptography import x509

from careid_broker.auditing import Auditor
from careid_broker.errors import (
    BrokerError,
    CertificateMalformedError,
    CertificateRevokedError,
    RevocationUnavailableError,
)
from careid_broker.pki import CertificateValidator, parse_certificate
from careid_broker.pki.crl_fetch import FetchedCrl
from careid_broker.signin.sessions import SigninSessions
from careid_broker.store import (
    EndReason,
    Outcome,
    RegistrationRecord,
    Repositories,
)
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

#: An administrator's "check this card now" (the console audits its own refusals so).
EVENT_CHECK = "admin.revocation.check"


class RevokedCardSessions:
    """Ends the sessions of registered cards whose certificate was newly revoked."""

    def __init__(self, *, repos: Repositories, sessions: SigninSessions, auditor: Auditor) -> None:
        self._repos = repos
        self._sessions = sessions
        self._audit = auditor

    def __call__(self, issuer_dn: str, serials: frozenset[int]) -> None:
        """A CRL of `issuer_dn` newly lists these serial numbers (or a check found one)."""
        self.end_sessions(issuer_dn, serials)

    def end_sessions(self, issuer_dn: str, serials: frozenset[int]) -> int:
        """End the sessions of the cards registered with these certificates, and every
        session a card opened with one of them; how many."""
        serials_hex = [f"{serial:X}" for serial in serials]
        total = 0
        registrations = self._repos.registrations.by_certificates(issuer_dn, serials_hex)
        for registration in registrations:
            ended = [
                record.sid
                for record in self._repos.sessions.active_for_card(registration.card_uuid)
                if self._sessions.end(record.sid, EndReason.CARD_REVOKED) is not None
            ]
            # And the sign-ins relying parties kept when the card last left the reader.
            with self._repos.store.transaction():
                for kept in self._repos.sessions.end_kept_signins(
                    EndReason.CARD_REVOKED, card_uuid=registration.card_uuid
                ):
                    self._sessions.publish_ended(kept, why="kept after a card removal")
                    ended.append(kept.sid)
            total += len(ended)
            log.warning(
                "a registered card's certificate is revoked: %d session(s) ended", len(ended)
            )
            self._audit(
                "card.revoked",
                outcome=Outcome.SUCCESS,
                subject=registration.account_mail,
                org=registration.org_code or None,
                details={
                    "card_uuid": registration.card_uuid,
                    "cert_issuer": issuer_dn,
                    "cert_serial": registration.cert_serial,
                    "sessions_ended": len(ended),
                },
            )
        return total + self._end_opened_with(issuer_dn, serials_hex)

    def _end_opened_with(self, issuer_dn: str, serials_hex: list[str]) -> int:
        # A session outlives the registration's certificate: the holder's renewed card
        # replaces it there, while a session the old card opened (a lost card's, say)
        # goes on. Found by the certificate the session was opened with.
        opened = self._repos.sessions.opened_with(issuer_dn, serials_hex)
        # One audit entry per account, card and certificate.
        ended: dict[tuple[str, str | None, str | None], list[str]] = {}
        by_sid = {record.sid: record for record in opened}
        for record in opened:
            if record.active and self._sessions.end(record.sid, EndReason.CARD_REVOKED):
                key = (record.account_mail, record.card_uuid, record.cert_serial)
                ended.setdefault(key, []).append(record.sid)
        removed = [r.sid for r in opened if r.end_reason == EndReason.CARD_REMOVED]
        if removed:
            with self._repos.store.transaction():
                for kept in self._repos.sessions.end_kept_signins(
                    EndReason.CARD_REVOKED, sids=removed
                ):
                    self._sessions.publish_ended(kept, why="kept after a card removal")
                    record = by_sid[kept.sid]
                    key = (record.account_mail, record.card_uuid, record.cert_serial)
                    ended.setdefault(key, []).append(kept.sid)
        for (mail, card_uuid, serial), sids in ended.items():
            log.warning("a revoked certificate had opened %d session(s): ended", len(sids))
            self._audit(
                "card.revoked",
                outcome=Outcome.SUCCESS,
                subject=mail,
                details={
                    "card_uuid": card_uuid,
                    "cert_issuer": issuer_dn,
                    "cert_serial": serial,
                    "sessions_ended": len(sids),
                    "opened_with_the_revoked_certificate": True,
                },
            )
        return sum(len(sids) for sids in ended.values())

    def linked_certificates(self) -> list[x509.Certificate]:
        """The certificates the registered cards are linked to (where known)."""
        found: list[x509.Certificate] = []
        for der in self._repos.registrations.linked_certificates():
            try:
                found.append(parse_certificate(der))
            except CertificateMalformedError:
                log.warning("a registration's stored certificate does not parse: skipped")
        return found


@dataclass(frozen=True, kw_only=True)
class CrlRefresh:
    """One CRL an administrator's refresh fetched (or could not), and what it ended."""

    crl: FetchedCrl
    sessions_ended: int = 0


@unique
class CheckResult(StrEnum):
    """What checking a registered card's revocation now found."""

    GOOD = "good"
    REVOKED = "revoked"
    UNAVAILABLE = "unavailable"
    """No trustworthy answer now (responder and CRL unreachable): try again later."""
    INVALID = "invalid"
    """The certificate no longer validates for another reason (expired, untrusted…)."""
    NO_CERTIFICATE = "no_certificate"
    """Registered before the broker kept certificates: the next card sign-in checks it."""
    NOT_CONFIGURED = "not_configured"
    """No [pki]: card sign-in is off."""


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    """The answer, the code behind it and the sessions it ended."""

    result: CheckResult
    code: str | None = None
    sessions_ended: int = 0


class CardRevocationCheck:
    """An administrator's "check this card's revocation now" and "refresh the CRLs now"."""

    def __init__(
        self,
        *,
        validator: CertificateValidator | None,
        revoked: RevokedCardSessions,
        auditor: Auditor,
    ) -> None:
        self._validator = validator
        self._revoked = revoked
        self._audit = auditor

    def check(self, registration: RegistrationRecord, *, actor: str) -> CheckOutcome:
        """Ask afresh whether the registered certificate is revoked (no cached answer);
        if it is, end the card's sessions. Audited."""
        outcome = self._check(registration)
        self._audit(
            EVENT_CHECK,
            outcome=Outcome.SUCCESS,
            code=outcome.code,
            actor=actor,
            subject=registration.account_mail,
            org=registration.org_code or None,
            details={
                "card_uuid": registration.card_uuid,
                "result": outcome.result.value,
                "sessions_ended": outcome.sessions_ended,
            },
        )
        return outcome

    def _check(self, registration: RegistrationRecord) -> CheckOutcome:
        if self._validator is None:
            return CheckOutcome(result=CheckResult.NOT_CONFIGURED)
        if registration.cert_der is None:
            return CheckOutcome(result=CheckResult.NO_CERTIFICATE)
        try:
            certificate = parse_certificate(registration.cert_der)
        except CertificateMalformedError:
            # Stored only after it was verified: damaged in the database since.
            log.warning("a registration's stored certificate does not parse: %s", registration.id)
            return CheckOutcome(result=CheckResult.INVALID, code=ErrorCode.CERTIFICATE_MALFORMED)
        revocation = self._validator.revocation
        revocation.ocsp.forget(certificate)
        revocation.crl.refresh_all()
        try:
            self._validator.trust(certificate)
        except CertificateRevokedError as exc:
            ended = self._revoked.end_sessions(
                certificate.issuer.rfc4514_string(), frozenset({certificate.serial_number})
            )
            return CheckOutcome(result=CheckResult.REVOKED, code=exc.code, sessions_ended=ended)
        except RevocationUnavailableError as exc:
            return CheckOutcome(result=CheckResult.UNAVAILABLE, code=exc.code)
        except BrokerError as exc:
            return CheckOutcome(result=CheckResult.INVALID, code=exc.code)
        return CheckOutcome(result=CheckResult.GOOD)

    def refresh_crls(self, *, actor: str) -> tuple[CrlRefresh, ...] | None:
        """Fetch and verify every CRL the configuration and the registered cards name;
        cards each lists lose their sessions. None without [pki]. Audited."""
        if self._validator is None:
            return None
        refreshed: list[CrlRefresh] = []
        for fetched in self._validator.fetch_crls(self._revoked.linked_certificates()):
            ended = 0
            if fetched.ok and fetched.issuer_dn is not None and fetched.serials:
                ended = self._revoked.end_sessions(fetched.issuer_dn, fetched.serials)
            elif not fetched.ok:
                log.warning(
                    "could not refresh the CRL from %s: %s",
                    fetched.source.location,
                    fetched.problem,
                )
            refreshed.append(CrlRefresh(crl=fetched, sessions_ended=ended))
        failed = [r.crl.source.location for r in refreshed if not r.crl.ok]
        self._audit(
            "admin.revocation.refresh_crls",
            outcome=Outcome.FAILURE if failed else Outcome.SUCCESS,
            code=ErrorCode.REVOCATION_UNAVAILABLE if failed else None,
            actor=actor,
            details={
                "crls_fetched": len(refreshed) - len(failed),
                "crls_failed": failed[:20],
                "sessions_ended": sum(r.sessions_ended for r in refreshed),
            },
        )
        return tuple(refreshed)
