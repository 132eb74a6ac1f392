"""Failure counters with exponential back-off (password sign-in, card attempts).

Counters live in the shared store so that a guesser spread across instances behind a
load balancer is counted once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from careid_broker.store._sql import insert_ignore, rows_where_in
from careid_broker.store.base import require_aware
from careid_broker.store.engine import Store
from careid_broker.store.models import ThrottleCounter
from careid_broker.store.subjects import normalise_mail


@dataclass(frozen=True, kw_only=True, slots=True)
class ThrottlePolicy:
    """`free_failures` within `window` cost nothing; each further one doubles the block."""

    free_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    first_block: timedelta = timedelta(seconds=30)
    max_block: timedelta = timedelta(hours=1)
    guard_failures: int | None = None
    """Stop at this many failures, whatever the doubling says: one short of the
    directory's own lockout, so that a stranger cannot lock a real account there."""
    guard_window: timedelta = timedelta(minutes=15)
    """How long the guard holds after the last failure: the directory's failure-count
    interval, after which it has forgotten every failure it saw."""

    def block_after(self, failures: int) -> timedelta:
        """How long to refuse attempts after this many failures in the window."""
        excess = failures - self.free_failures
        if excess <= 0:
            return timedelta(0)
        # Cap the shift: 2**30 × 30 s is already far past any sane max_block.
        return min(self.first_block * (1 << min(excess - 1, 30)), self.max_block)


@dataclass(frozen=True, kw_only=True, slots=True)
class ThrottleState:
    """Where a key stands: blocked until a time, or free to try."""

    key: str
    failures: int
    blocked_until: datetime | None
    now: datetime

    @property
    def blocked(self) -> bool:
        """True while attempts must be refused."""
        return self.blocked_until is not None and self.blocked_until > self.now

    @property
    def retry_after(self) -> timedelta:
        """How long until the next attempt is allowed (zero when not blocked)."""
        if self.blocked_until is None or self.blocked_until <= self.now:
            return timedelta(0)
        return self.blocked_until - self.now


def account_key(mail: str) -> str:
    """Throttle key for an account: the mail is hashed so the table holds no addresses."""
    return "account:" + hashlib.sha256(normalise_mail(mail).encode("utf-8")).hexdigest()


def address_key(address: str) -> str:
    """Throttle key for a client address."""
    return "addr:" + address.strip().lower()


class Throttle:
    """Record failures, check blocks, reset on success."""

    def __init__(self, store: Store, *, policy: ThrottlePolicy | None = None) -> None:
        self._store = store
        self._policy = policy or ThrottlePolicy()

    def record_failure(
        self, key: str, *, now: datetime | None = None, policy: ThrottlePolicy | None = None
    ) -> ThrottleState:
        """Count one failure; the state after it (blocked or not)."""
        when = require_aware(now) if now is not None else self._store.now()
        rules = policy or self._policy
        with self._store.transaction() as session:
            insert_ignore(
                session,
                ThrottleCounter,
                {
                    "key": key,
                    "failures": 0,
                    "window_started_at": when,
                    "last_failure_at": when,
                    "blocked_until": None,
                },
                ["key"],
            )
            # Row lock on PostgreSQL (SQLite holds the write lock already): concurrent
            # failures each count, none is lost to a read-modify-write race.
            row = session.scalars(
                select(ThrottleCounter).where(ThrottleCounter.key == key).with_for_update()
            ).one()
            still_blocked = row.blocked_until is not None and row.blocked_until > when
            if not still_blocked and row.window_started_at + rules.window <= when:
                # A quiet window has passed: start counting afresh.
                row.failures = 0
                row.window_started_at = when
            row.failures += 1
            row.last_failure_at = when
            block = rules.block_after(row.failures)
            if rules.guard_failures is not None and row.failures >= rules.guard_failures:
                block = max(block, rules.guard_window)
            if block:
                row.blocked_until = when + block
            session.flush()
            return ThrottleState(
                key=key, failures=row.failures, blocked_until=row.blocked_until, now=when
            )

    def check(self, key: str, *, now: datetime | None = None) -> ThrottleState:
        """The current state of a key, without counting anything."""
        when = require_aware(now) if now is not None else self._store.now()
        with self._store.session() as session:
            row = session.get(ThrottleCounter, key)
            if row is None:
                return ThrottleState(key=key, failures=0, blocked_until=None, now=when)
            return ThrottleState(
                key=key, failures=row.failures, blocked_until=row.blocked_until, now=when
            )

    def check_many(
        self, keys: Sequence[str], *, now: datetime | None = None
    ) -> tuple[ThrottleState, ...]:
        """The states of several keys, in their order, read in one query."""
        when = require_aware(now) if now is not None else self._store.now()
        with self._store.session() as session:
            rows = {row.key: row for row in rows_where_in(session, ThrottleCounter, "key", keys)}
        return tuple(
            ThrottleState(
                key=key,
                failures=rows[key].failures if key in rows else 0,
                blocked_until=rows[key].blocked_until if key in rows else None,
                now=when,
            )
            for key in keys
        )

    def reset(self, key: str) -> None:
        """Forget a key's failures (after a successful sign-in)."""
        with self._store.transaction() as session:
            session.execute(delete(ThrottleCounter).where(ThrottleCounter.key == key))
