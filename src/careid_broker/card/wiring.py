"""Card sign-in's parts, built once with the broker: `build_card_services(...)`.

Without a `[pki]` section there is no certificate validator and so no card sign-in: the
pages say so (`card_signin_unavailable`) instead of failing at start-up, so a
password-only deployment needs no PKI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from careid_broker.card.lock import SessionLock, WindowLimiter
from careid_broker.card.service import CardSignin
from careid_broker.card.settings import CardSettings
from careid_broker.directory import Directory
from careid_broker.metrics import BrokerMetrics
from careid_broker.pki import CertificateValidator, HttpFetcher, PkiConfig
from careid_broker.pki.sharing import PROCESS_ONLY, RevocationSharing
from careid_broker.pki.status import Clock
from careid_broker.signin.sessions import SigninSessions
from careid_broker.store import Repositories

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CardServices:
    """Card sign-in's parts (`validator` and `signin` are None when `[pki]` is absent)."""

    settings: CardSettings
    origin: str
    """The broker's own origin (from its issuer): what every token must be signed for."""
    validator: CertificateValidator | None
    signin: CardSignin | None
    lock: SessionLock
    removal_limiter: WindowLimiter

    @property
    def available(self) -> bool:
        """Whether card sign-in is configured (a `[pki]` section was given)."""
        return self.signin is not None


def build_card_services(
    *,
    settings: CardSettings,
    origin: str,
    pki: PkiConfig | None,
    repos: Repositories,
    directory: Directory,
    sessions: SigninSessions,
    keep_on_removal: frozenset[str] = frozenset(),
    metrics: BrokerMetrics,
    clock: Clock,
    http: HttpFetcher,
    sharing: RevocationSharing = PROCESS_ONLY,
) -> CardServices:
    """Card sign-in's parts from its settings and the broker's adapters."""
    validator: CertificateValidator | None = None
    signin: CardSignin | None = None
    if pki is not None:
        validator = CertificateValidator(
            pki,
            clock=clock,
            http=http,
            sharing=sharing,
        )
        signin = CardSignin(
            origin=origin,
            challenges=repos.challenges,
            validator=validator,
            registrations=repos.registrations,
            directory=directory,
            link_mode=settings.link_mode,
            identity_rule=pki.identity,
            on_revoked=sharing.on_revoked,
        )
    else:
        log.info("no [pki] section: smartcard sign-in and registration are switched off")
    return CardServices(
        settings=settings,
        origin=origin,
        validator=validator,
        signin=signin,
        lock=SessionLock(sessions=sessions, metrics=metrics, keep_on_removal=keep_on_removal),
        removal_limiter=WindowLimiter(
            limit=settings.removal_rate_limit, window=settings.removal_rate_window
        ),
    )
