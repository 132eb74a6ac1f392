"""The back-channel logout outbox: deliveries claimed safely by several instances.

Enqueue in the same transaction that ends the session (the transactional outbox), so a
crash can never end a session yet forget to tell its RPs. Workers claim due rows with
a lease: PostgreSQL `FOR UPDATE SKIP LOCKED` lets two instances claim disjoint rows
without waiting on each other; on SQLite the write lock serializes claims. A worker
settles a delivery only while its claim holds: one whose lease ran out and was claimed
again by another worker records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, func, or_, select, update

from careid_broker.store._sql import dialect_name
from careid_broker.store.base import new_secret
from careid_broker.store.engine import Store
from careid_broker.store.models import LogoutDelivery


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivery:
    """A back-channel logout to send: build the logout token with this `jti` (a new one
    for every attempt, so it also names the claim: settle with this `Delivery`)."""

    id: int
    client_id: str
    jti: str
    sid: str
    sub: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential back-off between delivery attempts, then give up."""

    max_attempts: int = 8
    first_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=30)

    def delay_after(self, attempts: int) -> timedelta:
        """The wait before the next attempt, after `attempts` failures."""
        return min(self.first_delay * (1 << min(max(attempts - 1, 0), 30)), self.max_delay)


class Settlement(StrEnum):
    """What settling a claimed delivery recorded."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    ABANDONED = "abandoned"
    CLAIM_LOST = "claim_lost"  # claimed again by another worker since: nothing recorded


def _delivery(row: LogoutDelivery) -> Delivery:
    return Delivery(
        id=row.id,
        client_id=row.client_id,
        jti=row.jti,
        sid=row.sid,
        sub=row.sub,
        attempts=row.attempts,
        created_at=row.created_at,
    )


def _still_claimed(delivery: Delivery) -> tuple[ColumnElement[bool], ...]:
    # The jti is the claim: a worker that claimed the delivery since has replaced it.
    return (
        LogoutDelivery.id == delivery.id,
        LogoutDelivery.jti == delivery.jti,
        LogoutDelivery.delivered_at.is_(None),
        LogoutDelivery.abandoned_at.is_(None),
    )


class LogoutOutbox:
    """Enqueue, claim and settle back-channel logout deliveries."""

    def __init__(self, store: Store, *, policy: RetryPolicy | None = None) -> None:
        self._store = store
        self._policy = policy or RetryPolicy()

    def enqueue(self, *, sid: str, sub: str, client_ids: Iterable[str]) -> list[Delivery]:
        """One pending delivery per client, each with its own logout token `jti`."""
        now = self._store.now()
        rows = [
            LogoutDelivery(
                client_id=client_id,
                jti=new_secret(24),
                sid=sid,
                sub=sub,
                created_at=now,
                attempts=0,
                next_attempt_at=now,
                claimed_until=None,
                delivered_at=None,
                abandoned_at=None,
                last_error=None,
            )
            for client_id in dict.fromkeys(client_ids)
        ]
        with self._store.transaction() as session:
            session.add_all(rows)
            session.flush()
            return [_delivery(r) for r in rows]

    def claim_due(self, limit: int, *, lease: timedelta = timedelta(seconds=60)) -> list[Delivery]:
        """Claim up to `limit` due deliveries for this worker until the lease ends.

        No delivery is ever handed to two workers while its lease runs; one whose
        worker died becomes due again when the lease passes. Every claim but a new
        delivery's first gives it a new `jti`, so the worker it was claimed from can
        no longer settle it.
        """
        now = self._store.now()
        with self._store.transaction() as session:
            query = (
                select(LogoutDelivery)
                .where(
                    LogoutDelivery.delivered_at.is_(None),
                    LogoutDelivery.abandoned_at.is_(None),
                    LogoutDelivery.next_attempt_at <= now,
                    or_(
                        LogoutDelivery.claimed_until.is_(None),
                        LogoutDelivery.claimed_until <= now,
                    ),
                )
                .order_by(LogoutDelivery.next_attempt_at, LogoutDelivery.id)
                .limit(limit)
            )
            if dialect_name(session) == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = session.scalars(query).all()
            for row in rows:
                reclaimed = row.claimed_until is not None  # its last worker never settled it
                row.claimed_until = now + lease
                if row.attempts or reclaimed:
                    # A retry is a new logout token (Back-Channel Logout 1.0 §2.4, §2.6):
                    # the RP may have received and recorded the last one's jti even if
                    # its answer never reached us, and would rightly refuse it again.
                    row.jti = new_secret(24)
            session.flush()
            return [_delivery(r) for r in rows]

    def mark_delivered(self, delivery: Delivery) -> Settlement:
        """The RP answered 200: done (DELIVERED), unless the claim was lost meanwhile."""
        with self._store.transaction() as session:
            result = session.execute(
                update(LogoutDelivery)
                .where(*_still_claimed(delivery))
                .values(delivered_at=self._store.now(), claimed_until=None),
                execution_options={"synchronize_session": False},
            )
            settled = int(getattr(result, "rowcount", 0)) == 1
            return Settlement.DELIVERED if settled else Settlement.CLAIM_LOST

    def mark_failed(self, delivery: Delivery, error: str) -> Settlement:
        """Record a failed attempt: RETRYING or ABANDONED (the last attempt failed), or
        CLAIM_LOST when another worker holds the delivery now.

        `error` is a short description for administrators (a status code, "timeout"):
        never the logout token.
        """
        now = self._store.now()
        with self._store.transaction() as session:
            row = session.scalars(
                select(LogoutDelivery).where(*_still_claimed(delivery)).with_for_update()
            ).one_or_none()
            if row is None:
                return Settlement.CLAIM_LOST
            row.attempts += 1
            row.last_error = error[:500]
            row.claimed_until = None
            if row.attempts >= self._policy.max_attempts:
                row.abandoned_at = now
                return Settlement.ABANDONED
            row.next_attempt_at = now + self._policy.delay_after(row.attempts)
            return Settlement.RETRYING

    def pending_count(self) -> int:
        """Deliveries neither delivered nor abandoned (for metrics)."""
        with self._store.session() as session:
            count = session.scalar(
                select(func.count()).where(
                    LogoutDelivery.delivered_at.is_(None),
                    LogoutDelivery.abandoned_at.is_(None),
                )
            )
            return int(count or 0)

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest delivery neither delivered nor abandoned was queued (metrics)."""
        with self._store.session() as session:
            return session.scalar(
                select(func.min(LogoutDelivery.created_at)).where(
                    LogoutDelivery.delivered_at.is_(None),
                    LogoutDelivery.abandoned_at.is_(None),
                )
            )
