"""A card revoked while its holder is signed in: its sessions end, its services are told.

The CRL refresher (and any CRL fetched at a sign-in) reports the certificates a new CRL
lists; the cards registered with one of them lose every session they opened, with
back-channel logout to each relying party, as when the card is pulled out. A
Registration Authority that revokes a lost card should not have to wait for the thief
to sign out.
"""

from __future__ import annotations

import logging

from careid_broker.auditing import Auditor
from careid_broker.signin.sessions import SigninSessions
from careid_broker.store import EndReason, Outcome, Repositories

log = logging.getLogger(__name__)


class RevokedCardSessions:
    """Ends the sessions of registered cards whose certificate was newly revoked."""

    def __init__(self, *, repos: Repositories, sessions: SigninSessions, auditor: Auditor) -> None:
        self._repos = repos
        self._sessions = sessions
        self._audit = auditor

    def __call__(self, issuer_dn: str, serials: frozenset[int]) -> None:
        """A CRL of `issuer_dn` newly lists these serial numbers."""
        registrations = self._repos.registrations.by_certificates(
            issuer_dn, [f"{serial:X}" for serial in serials]
        )
        for registration in registrations:
            ended = [
                record.sid
                for record in self._repos.sessions.active_for_card(registration.card_uuid)
                if self._sessions.end(record.sid, EndReason.CARD_REVOKED) is not None
            ]
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
