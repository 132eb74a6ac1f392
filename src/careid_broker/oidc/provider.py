"""The OpenID Provider of one app: its server, signer, back-channel worker — built once.

Built lazily from the broker's services the first time a request needs it (so it works
whatever order `create_app` registers things in) and kept in
`app.extensions["careid_oidc"]`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask, current_app

from careid_broker.directory import Directory
from careid_broker.metrics import BrokerMetrics
from careid_broker.oidc.backchannel import BackchannelLogout, DeliveryWorker
from careid_broker.oidc.clients import ClientRegistry
from careid_broker.oidc.config import OidcConfig
from careid_broker.oidc.context import ServerContext
from careid_broker.oidc.keys import TokenSigner
from careid_broker.oidc.logout import BrokerEndSession, end_browser_session
from careid_broker.oidc.server import BrokerAuthorizationServer, build_server
from careid_broker.store import KeyAlgorithm, Outcome, Repositories
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

EXTENSION_KEY = "careid_oidc"
_build_lock = threading.Lock()


@dataclass(kw_only=True)
class OidcProvider:
    """Everything the OIDC views use."""

    issuer: str
    config: OidcConfig
    clients: ClientRegistry
    repos: Repositories
    # Looked up at each use: tests may swap the directory or clock on the services.
    directory_of: Callable[[], Directory]
    clock: Callable[[], datetime]
    metrics: BrokerMetrics
    signer: TokenSigner
    server: BrokerAuthorizationServer
    backchannel: BackchannelLogout
    worker: DeliveryWorker | None
    _worker_pid: int | None = None

    @property
    def directory(self) -> Directory:
        """The broker's directory."""
        return self.directory_of()

    def endpoint(self, path: str) -> str:
        """An absolute URL under the issuer (discovery advertises these)."""
        return f"{self.issuer}{path}"

    def ensure_worker(self) -> None:
        """Start this process's delivery thread if configured (again after a fork)."""
        if self.worker is None:
            return
        pid = os.getpid()
        if self._worker_pid == pid and self.worker.running:
            return
        self.worker.start()
        self._worker_pid = pid

    def wake_worker(self) -> None:
        """Deliver queued logout tokens now."""
        if self.worker is not None:
            self.ensure_worker()
            self.worker.wake()

    def stop_worker(self) -> None:
        """Stop the delivery thread (tests, shutdown)."""
        if self.worker is not None:
            self.worker.stop()


def build_provider(
    *,
    issuer: str,
    config: OidcConfig,
    repos: Repositories,
    directory_of: Callable[[], Directory],
    clock: Callable[[], datetime],
    metrics: BrokerMetrics,
    start_worker: bool,
) -> OidcProvider:
    """Wire the provider; creates the signing keys the clients need if missing."""
    signer = TokenSigner(repos.keys.for_alg)
    signer.ensure_keys({KeyAlgorithm(alg.value) for alg in config.clients.id_token_algorithms()})

    def on_token_event(
        grant_type: str, client_id: str | None, error: str | None, details: dict[str, Any]
    ) -> None:
        _token_event(repos, grant_type, client_id, error, details)

    context = ServerContext(
        issuer=issuer,
        clients=config.clients,
        repos=repos,
        signer=signer,
        clock=clock,
        id_token_lifetime_seconds=config.id_token_lifetime_seconds,
        access_token_lifetime_seconds=config.access_token_lifetime_seconds,
        on_token_event=on_token_event,
    )
    backchannel = BackchannelLogout(
        issuer=issuer,
        clients=config.clients,
        outbox=repos.outbox,
        signer=signer,
        subjects=repos.subjects,
        audit=repos.audit,
        clock=clock,
        timeout=config.backchannel_timeout_seconds,
    )
    worker = (
        DeliveryWorker(backchannel, poll_seconds=config.backchannel_poll_seconds)
        if start_worker
        else None
    )
    server = build_server(context, jti_clock=clock)
    server.register_endpoint(
        BrokerEndSession(issuer=issuer, signer=signer, end=end_browser_session)
    )
    return OidcProvider(
        issuer=issuer,
        config=config,
        clients=config.clients,
        repos=repos,
        directory_of=directory_of,
        clock=clock,
        metrics=metrics,
        signer=signer,
        server=server,
        backchannel=backchannel,
        worker=worker,
    )


def _token_event(
    repos: Repositories,
    grant_type: str,
    client_id: str | None,
    error: str | None,
    details: dict[str, Any],
) -> None:
    # Security-relevant token events only (a replayed code or refresh token, a
    # revocation); routine issuance is counted in metrics, not audited one by one.
    from careid_broker.auditing import audit

    audit(
        f"oidc.{grant_type}",
        outcome=Outcome.FAILURE if error else Outcome.SUCCESS,
        code=ErrorCode.OIDC_TOKEN_REFUSED if error else None,
        rp=client_id,
        details={**details, **({"reason": error} if error else {})},
    )


def provider_for(app: Flask) -> OidcProvider:
    """The app's provider, built on first use from its services."""
    found = app.extensions.get(EXTENSION_KEY)
    if isinstance(found, OidcProvider):
        return found
    with _build_lock:
        found = app.extensions.get(EXTENSION_KEY)
        if isinstance(found, OidcProvider):
            return found
        from careid_broker.services import EXTENSION_KEY as SERVICES_KEY

        services = app.extensions.get(SERVICES_KEY)
        if services is None:
            raise RuntimeError("the broker services are not set up: build the app with create_app")
        config = services.config
        oidc_config = config.oidc
        if not isinstance(oidc_config, OidcConfig):
            raise RuntimeError("the [oidc] configuration was not loaded")
        provider = build_provider(
            issuer=config.broker.issuer,
            config=oidc_config,
            repos=services.repos,
            directory_of=lambda: services.directory,
            clock=lambda: services.clock(),
            metrics=services.metrics,
            start_worker=oidc_config.backchannel_worker and not config.broker.dev_disable_workers,
        )
        app.extensions[EXTENSION_KEY] = provider
        return provider


def current_provider() -> OidcProvider:
    """The provider of the app handling the current request."""
    return provider_for(current_app._get_current_object())  # type: ignore[attr-defined]
