"""Building card sign-in into an app: `init_app(app)` and `card_services()` for views.

Built once per app from the broker's services. Without a `[pki]` section there is no
certificate validator and so no card sign-in: the pages say so (`card_signin_unavailable`)
instead of failing at start-up, so a password-only deployment needs no PKI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, current_app

from careid_broker.card.lock import SessionLock, WindowLimiter
from careid_broker.card.service import CardSignin
from careid_broker.card.settings import CardSettings
from careid_broker.pki import CertificateValidator, UrllibFetcher
from careid_broker.services import EXTENSION_KEY as SERVICES_KEY
from careid_broker.services import BrokerServices
from careid_broker.web.security_headers import origin_of

log = logging.getLogger(__name__)

EXTENSION_KEY = "careid.card"


@dataclass(kw_only=True)
class CardServices:
    """Card sign-in's parts for one app (`validator` is None when `[pki]` is absent)."""

    settings: CardSettings
    origin: str
    """The broker's own origin (from its issuer): what every token must be signed for."""
    validator: CertificateValidator | None
    lock: SessionLock
    removal_limiter: WindowLimiter

    @property
    def available(self) -> bool:
        """Whether card sign-in is configured (a `[pki]` section was given)."""
        return self.validator is not None

    def signin(self, svc: BrokerServices) -> CardSignin | None:
        """The sign-in service over the app's current store and directory (None: off).

        Made per use (it is a few references): tests may swap the directory on the
        broker's services, and the service must see the swap.
        """
        if self.validator is None or svc.config.pki is None:
            return None
        return CardSignin(
            origin=self.origin,
            challenges=svc.repos.challenges,
            validator=self.validator,
            registrations=svc.repos.registrations,
            directory=svc.directory,
            link_mode=self.settings.link_mode,
            identity_rule=svc.config.pki.identity,
        )


def build_card_services(svc: BrokerServices) -> CardServices:
    """Card sign-in's parts from the broker's configuration and services."""
    config = svc.config
    settings = config.card
    origin = origin_of(config.broker.issuer)
    if origin is None:  # the configuration check already refuses such an issuer
        raise ValueError(f"the issuer {config.broker.issuer!r} has no origin")
    validator: CertificateValidator | None = None
    if config.pki is not None:
        validator = CertificateValidator(config.pki, clock=svc.clock, http=UrllibFetcher())
    else:
        log.info("no [pki] section: smartcard sign-in and registration are switched off")
    return CardServices(
        settings=settings,
        origin=origin,
        validator=validator,
        lock=SessionLock(store=svc.store, sessions=svc.repos.sessions),
        removal_limiter=WindowLimiter(
            limit=settings.removal_rate_limit, window=settings.removal_rate_window
        ),
    )


def init_app(app: Flask) -> None:
    """Build the card services (after `create_app` set up the broker's services)."""
    svc = app.extensions[SERVICES_KEY]
    if not isinstance(svc, BrokerServices):
        raise RuntimeError("the broker services are not set up: build the app with create_app")
    card = build_card_services(svc)
    app.extensions[EXTENSION_KEY] = card
    if card.validator is not None and not svc.config.broker.dev_disable_workers:
        # Each gunicorn worker builds its own app, so the CRL refresher thread is started
        # after the fork, never inherited across it.
        card.validator.start()


def card_services() -> CardServices:
    """The card services of the app handling the current request."""
    found = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(found, CardServices):
        raise RuntimeError("card sign-in is not set up: call careid_broker.card.wiring.init_app")
    return found
