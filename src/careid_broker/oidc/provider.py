"""The OpenID Provider: its server, signer and back-channel logout, built once with the
broker (`build_provider`), no Flask request needed.

It subscribes to "a session ended" when the broker is built: each ended session queues
a back-channel logout per relying party in the same transaction, and the delivery
thread is woken once that transaction has committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from careid_broker.auditing import Auditor
from careid_broker.codes import BrokerCode
from careid_broker.directory import Directory
from careid_broker.metrics import BrokerMetrics
from careid_broker.oidc.backchannel import BackchannelLogout, DeliveryWorker
from careid_broker.oidc.clients import ClientRegistry
from careid_broker.oidc.config import OidcConfig
from careid_broker.oidc.context import ServerContext
from careid_broker.oidc.keys import TokenSigner
from careid_broker.oidc.logout import BrokerEndSession, EndKeptSignin
from careid_broker.oidc.server import BrokerAuthorizationServer, build_server
from careid_broker.store import EndedSession, KeyAlgorithm, Outcome, Repositories, Store

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class OidcProvider:
    """Everything the OIDC views use."""

    issuer: str
    config: OidcConfig
    clients: ClientRegistry
    store: Store
    repos: Repositories
    directory: Directory
    clock: Callable[[], datetime]
    metrics: BrokerMetrics
    audit: Auditor
    signer: TokenSigner
    server: BrokerAuthorizationServer
    backchannel: BackchannelLogout
    worker: DeliveryWorker | None
    _worker_pid: int | None = field(default=None, repr=False)

    def endpoint(self, path: str) -> str:
        """An absolute URL under the issuer (discovery advertises these)."""
        return f"{self.issuer}{path}"

    def session_ended(self, ended: EndedSession) -> None:
        """Queue back-channel logout for every RP of a session that just ended.

        Called inside the transaction that ended it; the delivery thread is woken once
        that commits (the deliveries are not visible before). Idempotent for an
        already-ended session.
        """
        if self.backchannel.enqueue(ended):
            self.store.after_commit(self.wake_worker)

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
    store: Store,
    repos: Repositories,
    directory: Directory,
    clock: Callable[[], datetime],
    metrics: BrokerMetrics,
    audit: Auditor,
    refresh_refusal: Callable[[str | None], str | None],
    end_kept_signin: EndKeptSignin,
    with_worker: bool,
) -> OidcProvider:
    """Wire the provider. The signing keys the clients need are made on first use."""
    signer = TokenSigner(
        repos.keys.for_alg,
        ensure=frozenset(KeyAlgorithm(alg.value) for alg in config.clients.id_token_algorithms()),
    )

    def on_token_event(
        grant_type: str, client_id: str | None, error: str | None, details: dict[str, Any]
    ) -> None:
        # Security-relevant token events only (a replayed code or refresh token, a
        # revocation); routine issuance is counted in metrics, not audited one by one.
        audit(
            f"oidc.{grant_type}",
            outcome=Outcome.FAILURE if error else Outcome.SUCCESS,
            code=BrokerCode.OIDC_TOKEN_REFUSED if error else None,
            rp=client_id,
            details={**details, **({"reason": error} if error else {})},
        )

    context = ServerContext(
        issuer=issuer,
        clients=config.clients,
        repos=repos,
        signer=signer,
        clock=clock,
        id_token_lifetime_seconds=config.id_token_lifetime_seconds,
        access_token_lifetime_seconds=config.access_token_lifetime_seconds,
        on_token_event=on_token_event,
        refresh_refusal=refresh_refusal,
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
        if with_worker
        else None
    )
    server = build_server(context, jti_clock=clock)
    server.register_endpoint(
        BrokerEndSession(issuer=issuer, signer=signer, end_kept_signin=end_kept_signin)
    )
    return OidcProvider(
        issuer=issuer,
        config=config,
        clients=config.clients,
        store=store,
        repos=repos,
        directory=directory,
        clock=clock,
        metrics=metrics,
        audit=audit,
        signer=signer,
        server=server,
        backchannel=backchannel,
        worker=worker,
    )
