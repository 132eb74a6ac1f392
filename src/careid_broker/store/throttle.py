"""Failure counters with exponential back-off (password sign-in, card attempts).

Counters live in the shared store so that a guesser spread across instances behind a
load balancer is counted once. An attempt is booked against its keys before it is made
and settled once it is answered (`Throttle.reserve_all`, `Throttle.settle_all`): the
attempts in flight count as failures-to-be, so a burst sent all at once gets no further
than the same attempts sent one at a time.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import BindParameter, bindparam, case, delete, select, update
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

    def in_flight_allowed(self, failures: int) -> int:
        """How many attempts may be in flight at once with `failures` counted.

        As many as could all fail without going past the next block: the free failures
        left and the one that blocks (one at a time once a block is over, since the next
        failure blocks again), and never more than the guard leaves. A burst then gets
        exactly the answers the same attempts would get one after another.
        """
        allowed = max(self.free_failures + 1 - failures, 1)
        if self.guard_failures is not None:
            allowed = min(allowed, self.guard_failures - failures)
        return allowed

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
    """Whether an attempt may be made now: refused while a key is blocked (for
    `retry_after`), or while the attempts already in flight could use up what a key
    allows (`ThrottlePolicy.in_flight_allowed`). `key` names the key that refused."""

    allowed: bool
    blocked: bool = False
    retry_after: timedelta = timedelta(0)
    key: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Booking:
    """One key an attempt counts against, and the policy it counts under."""

    key: str
    policy: ThrottlePolicy
    forgotten_on_success: bool = True
    """Whether a success forgets the key's failures: an account's, yes; a client
    address's, no (a guesser must not clear it by signing in to an account of their own
    between guesses)."""
    counted_unanswered: bool = True
    """Whether an attempt that got no answer after reaching the directory
    (`AttemptOutcome.UNANSWERED`) counts as a failure: an account's, yes, since the
    directory may count it towards its lockout; a client address's, no (a directory that
    stops answering must not block everyone behind a hospital's shared address)."""


class AttemptOutcome(StrEnum):
    """How a reserved attempt ended."""

    FAILED = "failed"  # the directory refused the password: counted
    SUCCEEDED = "succeeded"  # it accepted it: the key's failures are forgotten
    UNDECIDED = "undecided"  # never reached the directory's verdict: nothing counted
    # The password may have reached the directory and no answer came back: the directory
    # may count it as a failure once it wakes up, so it is counted as one against the
    # keys `counted_unanswered`.
    UNANSWERED = "unanswered"


#: Attempts in flight since this long ago no longer count (their worker may have died).
PENDING_FOR = timedelta(seconds=60)

_PENDING = "pending:"


def account_key(mail: str) -> str:
    """Throttle key for a typed address no entry has: the mail is hashed so the table
    holds no addresses."""
    return "account:" + hashlib.sha256(normalise_mail(mail).encode("utf-8")).hexdigest()


def entry_key(dn: str) -> str:
    """Throttle key for a directory entry, whichever of its mail addresses was typed.

    The directory counts failed binds per entry, and `mail` may hold several values:
    counted per typed address, each would get a guard of its own and a stranger could
    lock the entry through two of them. The DN is the one the directory returned for
    the entry, spelt the same way each time, so case and surrounding spaces are all that
    is normalised; hashed like `account_key`, and under the same prefix, so the table
    does not tell entries from unknown addresses either.
    """
    return "account:" + hashlib.sha256(b"dn:" + dn.strip().casefold().encode("utf-8")).hexdigest()


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
        """Book an attempt against one key (`reserve_all`); `settle` it afterwards."""
        return self.reserve_all((Booking(key=key, policy=policy or self._policy),), now=now)

    def reserve_all(
        self, bookings: Sequence[Booking], *, now: datetime | None = None
    ) -> Reservation:
        """Book an attempt against every key before it is made; `settle_all` it afterwards.

        An attempt in flight may yet fail, so it counts against each key until it is
        settled: with `f` failures counted and `p` attempts in flight, one more is
        allowed only while p < `ThrottlePolicy.in_flight_allowed(f)` (with a guard,
        f + p < guard), for every key at once, however many workers and instances are
        asking (each booking holds the keys' row locks). All or nothing: refused for one
        key, the attempt is booked against none. A booking older than `PENDING_FOR` no
        longer counts.
        """
        when = require_aware(now) if now is not None else self._store.now()
        with self._store.transaction() as session:
            rows = _lock_rows(session, bookings, when)
            refusal: Reservation | None = None
            for booking in bookings:
                counter = rows.get(booking.key)
                pending = rows[_PENDING + booking.key]
                failures = 0
                if counter is not None:
                    if counter.blocked_until is not None and counter.blocked_until > when:
                        wait = counter.blocked_until - when
                        if refusal is None or not refusal.blocked or wait > refusal.retry_after:
                            refusal = Reservation(
                                allowed=False, blocked=True, retry_after=wait, key=booking.key
                            )
                        continue
                    if booking.policy.still_counting(
                        window_started_at=counter.window_started_at,
                        last_failure_at=counter.last_failure_at,
                        now=when,
                    ):
                        failures = counter.failures
                in_flight = pending.failures if pending.last_failure_at + PENDING_FOR > when else 0
                if in_flight >= booking.policy.in_flight_allowed(failures) and refusal is None:
                    refusal = Reservation(allowed=False, key=booking.key)
            if refusal is not None:
                return refusal
            _statement(_book_statement, len(bookings)).run(
                session,
                {"at": when, "stale": when - PENDING_FOR, **_numbered(_pending_keys(bookings))},
            )
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
        booking = Booking(key=key, policy=policy or self._policy)
        states = self.settle_all((booking,), outcome, now=now)
        return states[0] if states else None

    def settle_all(
        self, bookings: Sequence[Booking], outcome: AttemptOutcome, *, now: datetime | None = None
    ) -> tuple[ThrottleState, ...]:
        """End an attempt `reserve_all` booked: it is no longer in flight; a failure is
        counted against every key, an attempt `UNANSWERED` against the keys
        `counted_unanswered`, a success forgets the failures of the keys
        `forgotten_on_success`. The states of the keys counted against (in `bookings`'
        order), else none."""
        when = require_aware(now) if now is not None else self._store.now()
        with self._store.transaction() as session:
            # Pending rows, then counters, each in key order: the order `reserve_all`
            # locks them in, so two attempts never wait for each other in a circle (an
            # UPDATE of several rows locks them in whatever order it finds them).
            pending = _numbered(_pending_keys(bookings))
            _statement(_lock_statement, len(bookings)).rows(session, pending)
            _statement(_unbook_statement, len(bookings)).run(
                session, {"stale": when - PENDING_FOR, **pending}
            )
            counted = [
                booking
                for booking in bookings
                if outcome is AttemptOutcome.FAILED
                or (outcome is AttemptOutcome.UNANSWERED and booking.counted_unanswered)
            ]
            if counted:
                states = {
                    booking.key: self.record_failure(booking.key, now=when, policy=booking.policy)
                    for booking in sorted(counted, key=lambda b: b.key)
                }
                return tuple(states[booking.key] for booking in counted)
            if outcome is AttemptOutcome.SUCCEEDED:
                # One at a time, in key order (as the counters are locked everywhere).
                for key in sorted(b.key for b in bookings if b.forgotten_on_success):
                    _FORGET.run(session, {"k": key})
            return ()

    def settle_later(self, bookings: Sequence[Booking], outcome: AttemptOutcome) -> None:
        """`settle_all`, in the request's next write transaction (`Store.write_later`): a
        sign-in that goes on to write its session settles its attempt in that commit."""
        booked = tuple(bookings)

        def settle() -> None:
            self.settle_all(booked, outcome)

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


def _lock_statement(count: int) -> Prepared:
    """Lock and read the rows of `count` keys, in the order the keys are given.

    Row locks on PostgreSQL (SQLite holds the write lock already): concurrent bookings
    and settlements of one key queue here, none is lost to a read-modify-write race.
    The rows are locked in the order given (PostgreSQL locks a sorted SELECT's rows as
    they come out of the sort), so two bookings never hold locks the other is waiting
    for.
    """
    keys: list[BindParameter[str]] = [bindparam(f"v{n}") for n in range(count)]
    return Prepared(
        select(
            _COUNTERS.c.key,
            _COUNTERS.c.failures,
            _COUNTERS.c.window_started_at,
            _COUNTERS.c.last_failure_at,
            _COUNTERS.c.blocked_until,
        )
        .where(_COUNTERS.c.key.in_(keys))
        .order_by(case(*((_COUNTERS.c.key == key, n) for n, key in enumerate(keys))))
        .with_for_update()
    )


def _book_statement(count: int) -> Prepared:
    """One attempt more in flight for `count` pending keys.

    A pending row's time is when its attempts in flight last went from none to some,
    not the latest booking: moved forward by every booking, a booking whose worker died
    would never go stale on a key that always has traffic (a hospital's shared NAT
    address), and each would take an attempt in flight away from it for good. So once
    `PENDING_FOR` has passed since then, the next booking counts from one again. A live
    attempt lasts seconds (the directory's timeouts), so what that forgets is at most
    the few in flight at that moment, once a minute, and they are still settled.
    """
    live = (_COUNTERS.c.failures > 0) & (_COUNTERS.c.last_failure_at > bindparam("stale"))
    return Prepared(
        update(_COUNTERS)
        .where(_COUNTERS.c.key.in_([bindparam(f"v{n}") for n in range(count)]))
        .values(
            failures=case((live, _COUNTERS.c.failures + 1), else_=1),
            last_failure_at=case((live, _COUNTERS.c.last_failure_at), else_=bindparam("at")),
        )
    )


def _unbook_statement(count: int) -> Prepared:
    """One attempt fewer in flight for `count` pending keys; none once the last booking
    is stale (`PENDING_FOR`)."""
    return Prepared(
        update(_COUNTERS)
        .where(_COUNTERS.c.key.in_([bindparam(f"v{n}") for n in range(count)]))
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


# Built once per kind and number of keys (an attempt has one or two).
_STATEMENTS: dict[tuple[Callable[[int], Prepared], int], Prepared] = {}


def _statement(build: Callable[[int], Prepared], count: int) -> Prepared:
    statement = _STATEMENTS.get((build, count))
    if statement is None:
        statement = _STATEMENTS[(build, count)] = build(count)
    return statement


def _numbered(keys: Sequence[str]) -> dict[str, str]:
    return {f"v{n}": key for n, key in enumerate(keys)}


def _pending_keys(bookings: Sequence[Booking]) -> list[str]:
    return sorted(_PENDING + booking.key for booking in bookings)


def _lock_rows(session: Session, bookings: Sequence[Booking], when: datetime) -> dict[str, Any]:
    """The keys' pending rows, then their counters, locked in that order, each in key
    order (as `Throttle.settle_all` takes them). A pending row is made, counting
    nothing, the first time its key is booked.

    The counters are read by a statement of their own, once the pending rows are held:
    on PostgreSQL a statement that had to wait for a lock sees the rows it locked as
    they are now but no row committed meanwhile, such as the counter the attempt it
    waited for has just made by failing.
    """
    pending = _pending_keys(bookings)
    lock = _statement(_lock_statement, len(pending))
    rows = {row.key: row for row in lock.rows(session, _numbered(pending))}
    missing = [key for key in pending if key not in rows]
    if missing:
        for key in missing:
            _ensure_row(session, key, when)
        rows = {row.key: row for row in lock.rows(session, _numbered(pending))}
    counters = sorted(booking.key for booking in bookings)
    found = _statement(_lock_statement, len(counters)).rows(session, _numbered(counters))
    rows.update((row.key, row) for row in found)
    return rows


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
