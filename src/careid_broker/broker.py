"""The broker's object graph, built once per process: `build_broker(config, ...)`.

This is the composition root. Every service is made here, once, from the configuration
and the adapters (store, directory, clock) passed in, and wired to the others through
its constructor; "a session ended" is an event the OpenID Provider subscribes to here.
`create_app` hands the finished `Broker` to each web area; the CLI uses the same graph
without Flask. Nothing here imports a view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from careid_broker.admin.api_auth import ApiAuth
from careid_broker.admin.service import AdminService
from careid_broker.auditing import Auditor, RequestFacts, no_request
from careid_broker.card.revocation import CardRevocationCheck, RevokedCardSessions
from careid_broker.card.wiring import CardServices, build_card_services
from careid_broker.config import BrokerConfig
from careid_broker.directory import Directory, LdapDirectory
from careid_broker.errors import BrokerError
from careid_broker.metrics import BrokerMetrics
from careid_broker.oidc import OidcProvider, build_provider
from careid_broker.oidc.clients import CardRemoval
from careid_broker.origins import origin_of
from careid_broker.pki import HttpFetcher, UrllibFetcher
from careid_broker.pki.sharing import RevocationSharing
from careid_broker.registration.service import RegistrationService
from careid_broker.signin.aup import ACCEPT_WITHIN, AupAcceptance
from careid_broker.signin.events import SessionEvents
from careid_broker.signin.password import PasswordSignin, ThrottlePolicies
from careid_broker.signin.sessions import SigninSessions
from careid_broker.store import (
    KeyAlgorithm,
    LoginTransactions,
    OcspAnswerTable,
    Repositories,
    ResponderStateTable,
    Retention,
    RetentionWorker,
    SharedCrlTable,
    Store,
    Tokens,
    create_store,
    transaction_key,
    utc_now,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, kw_only=True)
class Broker:
    """Every service of one broker process, wired; views and commands reach them here."""

    config: BrokerConfig
    clock: Clock
    store: Store
    repos: Repositories
    directory: Directory
    metrics: BrokerMetrics
    audit: Auditor
    session_events: SessionEvents
    sessions: SigninSessions
    password: PasswordSignin
    aup: AupAcceptance
    card: CardServices
    revocation_check: CardRevocationCheck
    registration: RegistrationService
    admin: AdminService
    api: ApiAuth
    oidc: OidcProvider
    retention: RetentionWorker | None = None

    @property
    def runs_workers(self) -> bool:
        """Whether this process runs the background work (off only in development)."""
        return not self.config.broker.dev_disable_workers

    def start(self) -> None:
        """Start this process's background work: the CRL refresher, the back-channel
        logout deliverer and the retention purge. Call after a fork (each gunicorn worker
        builds its own)."""
        if not self.runs_workers:
            return
        if self.card.validator is not None:
            self.card.validator.start()
        self.oidc.ensure_worker()
        if self.retention is not None:
            self.retention.ensure_running()

    def stop(self) -> None:
        """Stop the background work and close the store's connections."""
        if self.card.validator is not None:
            self.card.validator.stop()
        self.oidc.stop_worker()
        if self.retention is not None:
            self.retention.stop()
        self.store.dispose()


def build_broker(
    config: BrokerConfig,
    *,
    directory: Directory | None = None,
    store: Store | None = None,
    clock: Clock | None = None,
    http: HttpFetcher | None = None,
    request_facts: Callable[[], RequestFacts] = no_request,
) -> Broker:
    """The whole graph from the configuration; adapters passed in replace the real ones.

    `request_facts` tells the auditor the current client address and request id (the
    web layer passes one reading the Flask request).
    """
    if clock is None:
        clock = store.clock if store is not None else utc_now
    metrics = BrokerMetrics()
    if store is None:
        store = create_store(
            config.database.url,
            clock=clock,
            busy_timeout=config.database.busy_timeout,
            pool_size=config.database.pool_size,
            observer=metrics.store,
        )
    if directory is None:
        directory = LdapDirectory(config.directory, clock=clock, observer=metrics.directory_pool)
    origin = origin_of(config.broker.issuer)
    if origin is None:  # the configuration check refuses such an issuer (config.py)
        raise ValueError(f"the issuer {config.broker.issuer!r} has no origin")
    oidc = config.oidc
    # The key that seals relying parties' login transactions, the same in every worker
    # and instance: a transaction made by one opens in all. AUP and registration steps
    # are stored rows (their ids live in the browser's cookie, which must stay small).
    tx_key = transaction_key(config.broker.secret_key)
    tx_previous = tuple(transaction_key(k) for k in config.broker.previous_secret_keys)
    repos = Repositories.build(
        store,
        key_passphrase=oidc.key_passphrase,
        key_previous_passphrase=oidc.key_previous_passphrase,
        key_algorithm=KeyAlgorithm.RS256,
        code_ttl=oidc.code_ttl,
        access_token_ttl=oidc.access_token_ttl,
        refresh_token_ttl=oidc.refresh_token_ttl,
        throttle_policy=config.signin.account_throttle,
        challenge_ttl=config.card.challenge_lifetime,
        logout_retry=oidc.logout_retry,
        transaction_key=tx_key,
        previous_transaction_keys=tx_previous,
    )
    # Read from the database by the worker that answers the scrape: the same for all.
    metrics.registry.gauge(
        "careid_logout_outbox_pending",
        "Back-channel logouts waiting to be delivered (absent while the store is down).",
        lambda: _pending_logouts(repos),
    )
    metrics.registry.gauge(
        "careid_logout_outbox_oldest_age_seconds",
        "How long the oldest back-channel logout still waiting was queued ago, in seconds"
        " (0 when none waits; absent while the store is down).",
        lambda: _oldest_logout_age(repos, clock),
    )
    audit = Auditor(repos.audit, request_facts=request_facts)
    events = SessionEvents()
    sessions = SigninSessions(
        store=store,
        repos=repos,
        auditor=audit,
        events=events,
        metrics=metrics,
        lifetime=config.broker.session_lifetime,
        idle=config.broker.session_idle,
        directory=directory,
    )
    password = PasswordSignin(
        directory=directory,
        throttle=repos.throttle,
        policies=ThrottlePolicies(
            account=config.signin.account_throttle, address=config.signin.address_throttle
        ),
        failure_floor=config.signin.failure_answer_floor,
    )
    revoked = RevokedCardSessions(repos=repos, sessions=sessions, auditor=audit)
    card = build_card_services(
        settings=config.card,
        origin=origin,
        pki=config.pki,
        repos=repos,
        directory=directory,
        sessions=sessions,
        keep_on_removal=frozenset(
            client.client_id for client in oidc.clients if client.card_removal is CardRemoval.NONE
        ),
        metrics=metrics,
        clock=clock,
        http=http or UrllibFetcher(),
        # Shared by every worker and instance: one that finds a responder down (or back)
        # tells them all at once.
        sharing=RevocationSharing(
            responders=ResponderStateTable(store),
            answers=OcspAnswerTable(store),
            crls=SharedCrlTable(store),
            # A card revoked while signed in loses its sessions (and its services are told).
            on_revoked=revoked,
            observer=metrics.revocation,
        ),
    )
    provider = build_provider(
        issuer=config.broker.issuer,
        config=oidc,
        store=store,
        repos=repos,
        directory=directory,
        clock=clock,
        metrics=metrics,
        audit=audit,
        refresh_refusal=sessions.refresh_refusal,
        end_kept_signin=sessions.end_kept_signin,
        with_worker=oidc.backchannel_worker and not config.broker.dev_disable_workers,
    )
    events.on_ended(provider.session_ended)
    # Every worker of every instance runs it: the store makes sure no two purge at once.
    retention = (
        RetentionWorker(
            Retention(
                store,
                audit=repos.audit,
                policy=config.retention.policy,
                session_lifetime=config.broker.session_lifetime,
                observer=metrics.retention,
            ),
            interval=config.retention.interval,
        )
        if config.retention.enabled and not config.broker.dev_disable_workers
        else None
    )
    return Broker(
        config=config,
        clock=clock,
        store=store,
        repos=repos,
        directory=directory,
        metrics=metrics,
        audit=audit,
        session_events=events,
        sessions=sessions,
        password=password,
        aup=AupAcceptance(
            issuer=config.broker.issuer,
            directory=directory,
            transactions=LoginTransactions(
                store, key=tx_key, previous_keys=tx_previous, ttl=ACCEPT_WITHIN, sealed=False
            ),
            writable=config.directory.writable,
            clock=clock,
        ),
        card=card,
        revocation_check=CardRevocationCheck(
            validator=card.validator, revoked=revoked, auditor=audit
        ),
        registration=RegistrationService(
            issuer=config.broker.issuer,
            store=store,
            password_signin=password,
            directory=directory,
            transactions=LoginTransactions(
                store,
                key=tx_key,
                previous_keys=tx_previous,
                ttl=config.card.registration_lifetime,
                sealed=False,
            ),
            challenges=repos.challenges,
            registrations=repos.registrations,
            link_mode=config.card.link_mode,
            clock=clock,
        ),
        admin=AdminService(
            repos=repos,
            directory=directory,
            settings=config.admin,
            session_ended=events.session_ended,
            audit=audit,
            now=store.now,
        ),
        # API tokens live in the shared token table, with the [api] lifetime.
        api=ApiAuth(config.api, Tokens(store, access_ttl=config.api.token_lifetime)),
        oidc=provider,
        retention=retention,
    )


def _pending_logouts(repos: Repositories) -> float | None:
    try:
        return float(repos.outbox.pending_count())
    except BrokerError:
        return None


def _oldest_logout_age(repos: Repositories, clock: Clock) -> float | None:
    try:
        oldest = repos.outbox.oldest_pending_at()
    except BrokerError:
        return None
    if oldest is None:
        return 0.0
    return max(0.0, (clock() - oldest).total_seconds())
