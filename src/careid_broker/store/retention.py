"""Retention: delete the working state the broker no longer needs, in bounded batches.

What is purged, each kind a while after its use ended (`RetentionPolicy`), in this
order, so that nothing is deleted while a row still refers to it:

    used_jtis, card_challenges, login_transactions    past their expiry
    oauth_tokens                                      past their expiry (revoked or not)
    authorization_codes                               past their expiry, once no token
                                                      names them (userinfo reads a
                                                      token's claims from its code)
    logout_outbox                                     delivered or abandoned
    signin_sessions (with session_relying_parties)    ended, or past the longest
                                                      session lifetime without being
                                                      ended, once no token, code or
                                                      outbox row names them
    throttle_counters                                 quiet and no longer blocking
    heartbeats                                        of hosts that stopped beating
    ocsp_answers, ocsp_responders                     past their validity or back-off

Never touched: the audit log (a hash chain that cannot lose an entry), subjects,
registrations, role choices and signing keys.

Each batch is one short write transaction deleting at most `batch_size` rows, so a
purge never holds SQLite's write lock (or many PostgreSQL row locks) for long. On
PostgreSQL every batch first takes a transaction-scoped advisory lock without waiting:
when another instance holds it, that instance is purging and this one leaves the pass
to it. Rows are picked `FOR UPDATE SKIP LOCKED`, so a purge never waits on a request;
a token is deleted only once no other token points at it, so a deletion never has to
update (and lock) a row it did not pick.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.orm import InstrumentedAttribute, aliased

from careid_broker.store._sql import RETENTION_LOCK, dialect_name, try_serialize_on
from careid_broker.store.audit import AuditLog, Outcome
from careid_broker.store.base import Base
from careid_broker.store.engine import Store
from careid_broker.store.errors import StoreError
from careid_broker.store.models import (
    AuthorizationCode,
    CardChallenge,
    Heartbeat,
    LoginTransaction,
    LogoutDelivery,
    OAuthToken,
    OcspAnswer,
    OcspResponderState,
    SigninSession,
    ThrottleCounter,
    UsedJti,
)

log = logging.getLogger(__name__)

#: Throttle windows are at most a day (`[signin] window_seconds`): a counter kept for
#: less could be forgotten while it still counts a guesser's failures.
MIN_THROTTLE_RETENTION = timedelta(days=1)


class PurgeKind(StrEnum):
    """What the purge deletes: a table's name, in the order the purge visits them."""

    USED_JTIS = "used_jtis"
    CARD_CHALLENGES = "card_challenges"
    LOGIN_TRANSACTIONS = "login_transactions"
    OAUTH_TOKENS = "oauth_tokens"
    AUTHORIZATION_CODES = "authorization_codes"
    LOGOUT_OUTBOX = "logout_outbox"
    SIGNIN_SESSIONS = "signin_sessions"
    THROTTLE_COUNTERS = "throttle_counters"
    HEARTBEATS = "heartbeats"
    OCSP_ANSWERS = "ocsp_answers"
    OCSP_RESPONDERS = "ocsp_responders"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionPolicy:
    """How long each kind is kept after its use ended, and the most rows per batch."""

    ended_sessions: timedelta = timedelta(days=30)
    expired_tokens: timedelta = timedelta(days=7)
    expired_codes: timedelta = timedelta(days=1)
    expired_challenges: timedelta = timedelta(days=1)
    login_transactions: timedelta = timedelta(days=1)
    used_jtis: timedelta = timedelta(days=1)
    throttle_counters: timedelta = timedelta(days=1)
    logout_deliveries: timedelta = timedelta(days=7)
    heartbeats: timedelta = timedelta(days=7)
    ocsp_state: timedelta = timedelta(days=1)
    batch_size: int = 500

    def __post_init__(self) -> None:
        kept = [getattr(self, f.name) for f in fields(self) if f.name != "batch_size"]
        if any(period < timedelta(0) for period in kept):
            raise ValueError("a retention period cannot be negative")
        if self.throttle_counters < MIN_THROTTLE_RETENTION:
            raise ValueError(f"throttle counters must be kept at least {MIN_THROTTLE_RETENTION}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class PurgeReport:
    """One pass: rows deleted per kind (kinds with none left out).

    `skipped`: another instance was purging, so this one did nothing. `complete`: every
    kind was purged down to nothing left to delete (False when stopped, interrupted by
    the store, or when another instance took over half-way).
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    skipped: bool = False
    complete: bool = True

    @property
    def total(self) -> int:
        """Rows deleted in the pass, every kind together."""
        return sum(self.counts.values())


class RetentionObserver(Protocol):
    """Told the size of every batch deleted (the metrics; structural, as the store does
    not import them)."""

    def purged(self, kind: str, count: int) -> None: ...


@dataclass(frozen=True, slots=True)
class _Rule:
    model: type[Base]
    key: InstrumentedAttribute[Any]
    condition: Any


class Retention:
    """Run purge passes over one Store; one pass at a time in a process."""

    def __init__(
        self,
        store: Store,
        *,
        audit: AuditLog,
        policy: RetentionPolicy | None = None,
        session_lifetime: timedelta = timedelta(hours=8),
        observer: RetentionObserver | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._policy = policy or RetentionPolicy()
        # A session nobody ended is over at the latest this long after its sign-in.
        self._session_lifetime = session_lifetime
        self._observer = observer
        self._guard = threading.Lock()
        self._guard_pid = os.getpid()

    @property
    def policy(self) -> RetentionPolicy:
        """The retention periods and batch size in force."""
        return self._policy

    def purge_batch(self, kind: PurgeKind) -> int | None:
        """Delete at most `batch_size` rows of one kind in one transaction: how many, or
        None when another instance holds the purge lock (nothing was done)."""
        with self._store.transaction() as session:
            if not try_serialize_on(session, RETENTION_LOCK):
                return None
            rule = self._rule(kind, self._store.now())
            query = select(rule.key).where(rule.condition).limit(self._policy.batch_size)
            if dialect_name(session) == "postgresql":
                query = query.with_for_update(skip_locked=True)
            keys = session.scalars(query).all()
            if not keys:
                return 0
            result = session.execute(
                delete(rule.model).where(rule.key.in_(keys)),
                execution_options={"synchronize_session": False},
            )
            count = int(getattr(result, "rowcount", 0))
        if count and self._observer is not None:
            self._observer.purged(kind.value, count)
        return count

    def run_pass(self, *, between_batches: Callable[[], bool] | None = None) -> PurgeReport:
        """Purge every kind until nothing is left to delete, and audit what was deleted
        (one `retention.purge` entry; none when nothing was).

        `between_batches` is called after each batch that deleted rows; True stops the
        pass (the worker waits there, so other writers get the lock in between).
        """
        guard = self._process_guard()
        if not guard.acquire(blocking=False):
            return PurgeReport(skipped=True, complete=False)
        try:
            counts: dict[str, int] = {}
            try:
                outcome = self._purge_all(counts, between_batches)
            except StoreError as exc:
                log.warning("retention purge interrupted: %s", exc.code.value)
                outcome = "interrupted"
            except Exception:
                # Audit what was deleted before the fault, then let it be logged.
                try:
                    self._record(counts, complete=False)
                except StoreError:
                    log.warning("retention purge not audited: %s", dict(counts))
                raise
            report = PurgeReport(
                counts=counts,
                skipped=outcome == "skipped",
                complete=outcome == "complete",
            )
            self._record(counts, complete=report.complete)
            return report
        finally:
            guard.release()

    def _purge_all(self, counts: dict[str, int], between_batches: Callable[[], bool] | None) -> str:
        first = True
        for kind in PurgeKind:
            while True:
                deleted = self.purge_batch(kind)
                if deleted is None:
                    # Another instance is purging: leave the rest of the pass to it.
                    return "skipped" if first else "taken_over"
                first = False
                if not deleted:
                    break
                counts[kind.value] = counts.get(kind.value, 0) + deleted
                if between_batches is not None and between_batches():
                    return "stopped"
        return "complete"

    def _record(self, counts: Mapping[str, int], *, complete: bool) -> None:
        if not counts:
            return
        total = sum(counts.values())
        self._audit.append(
            "retention.purge",
            Outcome.SUCCESS,
            details={"purged": dict(counts), "complete": complete},
        )
        log.info("retention purge deleted %d rows: %s", total, dict(counts))

    def _process_guard(self) -> threading.Lock:
        # A lock held by a thread of the parent at a fork stays held in the child for
        # ever: a forked process starts with a fresh one.
        if self._guard_pid != os.getpid():
            self._guard = threading.Lock()
            self._guard_pid = os.getpid()
        return self._guard

    def _rule(self, kind: PurgeKind, now: datetime) -> _Rule:
        p = self._policy
        match kind:
            case PurgeKind.USED_JTIS:
                return _Rule(UsedJti, UsedJti.key, UsedJti.expires_at < now - p.used_jtis)
            case PurgeKind.CARD_CHALLENGES:
                return _Rule(
                    CardChallenge,
                    CardChallenge.challenge_hash,
                    CardChallenge.expires_at < now - p.expired_challenges,
                )
            case PurgeKind.LOGIN_TRANSACTIONS:
                # Their challenges are purged by their own expiry (CARD_CHALLENGES),
                # which comes no later.
                return _Rule(
                    LoginTransaction,
                    LoginTransaction.id_hash,
                    LoginTransaction.expires_at < now - p.login_transactions,
                )
            case PurgeKind.OAUTH_TOKENS:
                return _Rule(OAuthToken, OAuthToken.id, _token_purgeable(now - p.expired_tokens))
            case PurgeKind.AUTHORIZATION_CODES:
                return _Rule(
                    AuthorizationCode,
                    AuthorizationCode.id,
                    and_(
                        AuthorizationCode.expires_at < now - p.expired_codes,
                        ~exists().where(OAuthToken.code_id == AuthorizationCode.id),
                    ),
                )
            case PurgeKind.LOGOUT_OUTBOX:
                return _Rule(
                    LogoutDelivery, LogoutDelivery.id, _delivery_settled(now - p.logout_deliveries)
                )
            case PurgeKind.SIGNIN_SESSIONS:
                return _Rule(
                    SigninSession,
                    SigninSession.sid,
                    _session_over(now - p.ended_sessions, self._session_lifetime),
                )
            case PurgeKind.THROTTLE_COUNTERS:
                cutoff = now - p.throttle_counters
                return _Rule(
                    ThrottleCounter,
                    ThrottleCounter.key,
                    and_(
                        ThrottleCounter.last_failure_at < cutoff,
                        or_(
                            ThrottleCounter.blocked_until.is_(None),
                            ThrottleCounter.blocked_until < cutoff,
                        ),
                    ),
                )
            case PurgeKind.HEARTBEATS:
                return _Rule(Heartbeat, Heartbeat.host, Heartbeat.beat_at < now - p.heartbeats)
            case PurgeKind.OCSP_ANSWERS:
                return _Rule(
                    OcspAnswer, OcspAnswer.cert_key, OcspAnswer.expires_at < now - p.ocsp_state
                )
            case PurgeKind.OCSP_RESPONDERS:
                return _Rule(
                    OcspResponderState,
                    OcspResponderState.url,
                    OcspResponderState.until < now - p.ocsp_state,
                )


def _token_purgeable(cutoff: datetime) -> Any:
    # A token another token was rotated from points at it (rotated_to): deleting it
    # first would make the database update that row too, one the purge never locked,
    # and a request revoking the family at that moment could deadlock with the purge.
    # The older token goes first; this one in a later batch.
    earlier = aliased(OAuthToken)
    return and_(
        OAuthToken.expires_at < cutoff,
        ~exists().where(earlier.rotated_to == OAuthToken.id),
    )


def _delivery_settled(cutoff: datetime) -> Any:
    # next_attempt_at (indexed) narrows the search to old rows: a delivery is attempted
    # once it falls due, so it settles no earlier (one settled early, by another
    # instance's clock, waits for that too: a retry delay at most).
    return and_(
        LogoutDelivery.next_attempt_at < cutoff,
        or_(LogoutDelivery.delivered_at < cutoff, LogoutDelivery.abandoned_at < cutoff),
    )


def _session_over(cutoff: datetime, lifetime: timedelta) -> Any:
    over = or_(
        SigninSession.ended_at < cutoff,
        # Never ended (the browser was closed): over once past the longest lifetime.
        and_(SigninSession.ended_at.is_(None), SigninSession.auth_time < cutoff - lifetime),
    )
    return and_(
        over,
        ~exists().where(OAuthToken.sid == SigninSession.sid),
        ~exists().where(AuthorizationCode.sid == SigninSession.sid),
        ~exists().where(LogoutDelivery.sid == SigninSession.sid),
    )
