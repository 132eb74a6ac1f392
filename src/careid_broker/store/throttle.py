"""Failure counters with exponential back-off (password sign-in, card attempts).

Counters live in the shared store so that a guesser spread across instances behind a
load balancer is counted once.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.orm import Session

from careid_broker.store._sql import insert_ignore, rows_where_in, table_of
from careid_broker.store.base import require_aware
from careid_broker.store.engine import Store
from careid_broker.store.models import ThrottleCounter
from careid_broker.store.prepared import Prepared
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

    def still_counting(
        self, *, window_started_at: datetime, last_failure_at: datetime, now: datetime
    ) -> bool:
        """Whether failures counted so far still count at `now`.

        They count for `window` from the first. With a guard they also count while the
        directory may still hold them: until `guard_window` has passed with no failure,
        which is when a directory that counts from the last failure (Active Directory)
        or forgets each failure after the interval (OpenLDAP ppolicy) has forgotten
        them all, however long the guard window is beside the throttle's.
        """
        if window_started_at + self.window > now:
            return True
        return self.guard_failures is not None and last_failure_at + self.guard_window > now

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


@dataclass(frozen=True, kw_only=True, slots=True)
class Reservation:
    """Whether an attempt may be made now: refused while the key is blocked (for
    `retry_after`), or while the attempts already in flight could use up the guard."""

    allowed: bool
    blocked: bool = False
    retry_after: timedelta = timedelta(0)


class AttemptOutcome(StrEnum):
    """How a reserved attempt ended."""

    FAILED = "failed"  # the directory refused the password: counted
    SUCCEEDED = "succeeded"  # it accepted it: the key's failures are forgotten
    UNDECIDED = "undecided"  # no answer (the directory was away): nothing counted


#: An attempt booked this long ago no longer counts as in flight (its worker died).
PENDING_FOR = timedelta(seconds=60)

_PENDING = "pending:"


def account_key(mail: str) -> str:
    """Throttle key for an account: the mail is hashed so the table holds no addresses."""
    return "account:" + hashlib.sha256(normalise_mail(mail).encode("utf-8")).hexdigest()


#: The longest non-IP address text kept as it is in a key (longer ones are hashed), so
#: "pending:" + the key fits the 128-character column.
_MAX_ADDRESS_TEXT = 64


def address_key(address: str) -> str:
    """Throttle key for a client address: an IPv6 client by its /64, an IPv4-mapped
    IPv6 one by its IPv4 address.

    One IPv6 host routinely has a whole /64 to itself (RFC 7421 §1, SLAAC privacy
    addresses): counted per address it could guess without end. A zone id ("%eth0")
    names the local interface, not a client, and is dropped. Text that is no IP address
    ("unknown", when the WSGI server knows none) is keyed as it is, hashed when long.
    """
    text = address.strip().lower()
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        if len(text) > _MAX_ADDRESS_TEXT:
            text = "#" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        return "addr:" + text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "addr:" + str(ip.ipv4_mapped)
        return "addr:" + str(ipaddress.IPv6Network((ip, 64), strict=False))
    return "addr:" + str(ip)


class Throttle:
    """Record failures, check blocks, reset on success."""

    def __init__(self, store: Store, *, policy: ThrottlePolicy | None = None) -> None:
        self._store = store
        self._policy = policy or ThrottlePolicy()

    def reserve(
        self, key: str, *, policy: ThrottlePolicy | None = None, now: datetime | None = None
    ) -> Reservation:
        """Book an attempt against `key` before it is made; `settle` it afterwards.

        The guard (`guard_failures`) caps the failures the directory may see. An attempt
        in flight may yet fail, so it counts against the guard until it is settled:
        with `f` failures counted and `p` attempts in flight, one more is allowed only
        while f + p < guard, however many workers and instances are asking at once
        (each booking holds the key's row lock). A booking older than `PENDING_FOR`
        no longer counts. Without a guard nothing is booked: the doubling blocks alone
        apply, as `check` reads them.
        """
        when = require_aware(now) if now is not None else self._store.now()
        rules = policy or self._policy
        if rules.guard_failures is None:
            state = self.check(key, now=when)
            return Reservation(
                allowed=not state.blocked, blocked=state.blocked, retry_after=state.retry_after
            )
        with self._store.transaction() as session:
            pending_key = _PENDING + key
            _ensure_row(session, pending_key, when)
            pending = _LOCK_ROW.one(session, {"k": pending_key})
            counter = _LOCK_ROW.one_or_none(session, {"k": key})
            failures = 0
            if counter is not None:
                if counter.blocked_until is not None and counter.blocked_until > when:
                    return Reservation(
                        allowed=False, blocked=True, retry_after=counter.blocked_until - when
                    )
                if rules.still_counting(
                    window_started_at=counter.window_started_at,
                    last_failure_at=counter.last_failure_at,
                    now=when,
                ):
                    failures = counter.failures
            in_flight = pending.failures if pending.last_failure_at + PENDING_FOR > when else 0
            if failures + in_flight >= rules.guard_failures:
                return Reservation(allowed=False)
            _SET_BOOKED.run(session, {"k": pending_key, "n": in_flight + 1, "at": when})
            return Reservation(allowed=True)

    def settle(
        self,
        key: str,
        outcome: AttemptOutcome,
        *,
        policy: ThrottlePolicy | None = None,
        now: datetime | None = None,
    ) -> ThrottleState | None:
        """End an attempt `reserve` booked; the key's state after a failure, else None."""
        when = require_aware(now) if now is not None else self._store.now()
        rules = policy or self._policy
        with self._store.transaction() as session:
            if rules.guard_failures is not None:
                _UNBOOK.run(session, {"k": _PENDING + key, "stale": when - PENDING_FOR})
            if outcome is AttemptOutcome.FAILED:
                return self.record_failure(key, now=when, policy=rules)
            if outcome is AttemptOutcome.SUCCEEDED:
                _FORGET.run(session, {"k": key})
            return None

    def settle_later(
        self, key: str, outcome: AttemptOutcome, *, policy: ThrottlePolicy | None = None
    ) -> None:
        """`settle`, in the request's next write transaction (`Store.write_later`): a
        sign-in that goes on to write its session settles its attempt in that commit."""

        def settle() -> None:
            self.settle(key, outcome, policy=policy)

        self._store.write_later(settle)

    def record_failure(
        self, key: str, *, now: datetime | None = None, policy: ThrottlePolicy | None = None
    ) -> ThrottleState:
        """Count one failure; the state after it (blocked or not)."""
        when = require_aware(now) if now is not None else self._store.now()
        rules = policy or self._policy
        with self._store.transaction() as session:
            _ensure_row(session, key, when)
            # Row lock on PostgreSQL (SQLite holds the write lock already): concurrent
            # failures each count, none is lost to a read-modify-write race.
            row = session.scalars(
                select(ThrottleCounter).where(ThrottleCounter.key == key).with_for_update()
            ).one()
            still_blocked = row.blocked_until is not None and row.blocked_until > when
            if not still_blocked and not rules.still_counting(
                window_started_at=row.window_started_at,
                last_failure_at=row.last_failure_at,
                now=when,
            ):
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


_COUNTERS = table_of(ThrottleCounter)
# Row lock on PostgreSQL (SQLite holds the write lock already): concurrent bookings
# and failures of one key queue here, none is lost to a read-modify-write race.
_LOCK_ROW = Prepared(
    select(
        _COUNTERS.c.failures,
        _COUNTERS.c.window_started_at,
        _COUNTERS.c.last_failure_at,
        _COUNTERS.c.blocked_until,
    )
    .where(_COUNTERS.c.key == bindparam("k"))
    .with_for_update()
)
_SET_BOOKED = Prepared(
    update(_COUNTERS)
    .where(_COUNTERS.c.key == bindparam("k"))
    .values(failures=bindparam("n"), last_failure_at=bindparam("at"))
)
# One attempt fewer in flight; none once the last booking is stale (`PENDING_FOR`).
_UNBOOK = Prepared(
    update(_COUNTERS)
    .where(_COUNTERS.c.key == bindparam("k"))
    .values(
        failures=case(
            (
                (_COUNTERS.c.failures > 0) & (_COUNTERS.c.last_failure_at > bindparam("stale")),
                _COUNTERS.c.failures - 1,
            ),
            else_=0,
        )
    )
)
_FORGET = Prepared(delete(_COUNTERS).where(_COUNTERS.c.key == bindparam("k")))


def _ensure_row(session: Session, key: str, when: datetime) -> None:
    """Make `key`'s row, counting nothing yet, if it has none (a no-op when it exists)."""
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
