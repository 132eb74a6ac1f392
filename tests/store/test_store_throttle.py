"""Throttling counters: free failures, exponential blocks, windows, shared counting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from careid_broker.store import (
    AttemptOutcome,
    Booking,
    Store,
    Throttle,
    ThrottlePolicy,
    account_key,
    address_key,
    entry_key,
)
from support.clock import FakeClock

POLICY = ThrottlePolicy(
    free_failures=3,
    window=timedelta(minutes=15),
    first_block=timedelta(seconds=30),
    max_block=timedelta(minutes=4),
)


def test_keys_hide_the_mail_address_and_the_entry() -> None:
    key = account_key(" Alice@NHS.net ")
    assert key == account_key("alice@nhs.net")
    assert key.startswith("account:") and "alice" not in key and len(key) == 8 + 64
    entry = entry_key("uid=alice,ou=people,dc=nhs,dc=example")
    assert entry == entry_key(" UID=Alice,ou=People,dc=NHS,dc=example")
    assert entry.startswith("account:") and "alice" not in entry and len(entry) == 8 + 64
    # An entry's key is not the key of any address typed for it.
    assert entry != account_key("uid=alice,ou=people,dc=nhs,dc=example")


def test_an_ipv6_client_is_its_64_and_a_mapped_ipv4_client_its_ipv4_address() -> None:
    assert address_key("192.0.2.7") == address_key(" 192.0.2.7 ") == "addr:192.0.2.7"
    network = address_key("2001:DB8:1:2::1")
    assert network == "addr:2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == network
    assert address_key("2001:db8:1:3::1") != network
    assert address_key("::ffff:192.0.2.7") == address_key("::FFFF:c000:0207") == "addr:192.0.2.7"
    # A zone id names the local interface, not another client.
    assert address_key("fe80::1%eth0") == address_key("fe80::2") == "addr:fe80::/64"


@pytest.mark.parametrize(
    "odd", ["unknown", "", "   ", "fe80::1%", "%eth0", "1.2.3.4.5", "::ffff:1.2.3", "é" * 300]
)
def test_an_address_that_is_not_one_still_gets_a_key_that_fits(odd: str) -> None:
    key = address_key(odd)
    assert key.startswith("addr:") and len("pending:" + key) <= 128
    assert key == address_key(odd)


def test_blocks_start_after_the_free_failures_and_double(store: Store, clock: FakeClock) -> None:
    throttle = Throttle(store, policy=POLICY)
    key = account_key("alice@nhs.net")
    for n in range(1, 4):
        state = throttle.record_failure(key)
        assert state.failures == n and not state.blocked

    blocks = []
    for _ in range(5):
        state = throttle.record_failure(key)
        assert state.blocked
        blocks.append(state.retry_after.total_seconds())
        assert throttle.check(key).blocked_until == state.blocked_until
    assert blocks == [30, 60, 120, 240, 240]  # doubling, capped at max_block

    clock.advance(timedelta(minutes=4))
    assert not throttle.check(key).blocked
    assert throttle.check(key).retry_after == timedelta(0)


def test_a_quiet_window_starts_the_count_again(store: Store, clock: FakeClock) -> None:
    throttle = Throttle(store, policy=POLICY)
    key = address_key("192.0.2.7")
    for _ in range(3):
        throttle.record_failure(key)
    clock.advance(timedelta(minutes=15))
    state = throttle.record_failure(key)
    assert state.failures == 1 and not state.blocked


def test_failures_within_the_window_keep_counting_after_a_block(
    store: Store, clock: FakeClock
) -> None:
    throttle = Throttle(store, policy=POLICY)
    key = account_key("bob@nhs.net")
    for _ in range(4):
        throttle.record_failure(key)
    clock.advance(timedelta(minutes=14))
    # Still inside the window (and past the block): the next failure is the fifth.
    assert throttle.record_failure(key).failures == 5


def test_a_success_forgets_the_failures_and_unknown_keys_are_clear(store: Store) -> None:
    throttle = Throttle(store, policy=POLICY)
    key = account_key("carol@nhs.net")
    assert throttle.check(key).failures == 0 and not throttle.check(key).blocked
    for _ in range(5):
        throttle.record_failure(key)
    assert throttle.check(key).blocked
    throttle.settle(key, AttemptOutcome.SUCCEEDED)
    assert throttle.check(key).failures == 0 and not throttle.check(key).blocked


def test_an_explicit_policy_and_time_override_the_defaults(store: Store, clock: FakeClock) -> None:
    throttle = Throttle(store)
    strict = ThrottlePolicy(free_failures=0, first_block=timedelta(seconds=5))
    later = clock.now + timedelta(hours=1)
    state = throttle.record_failure("k", now=later, policy=strict)
    assert state.blocked_until == later + timedelta(seconds=5)


def test_failures_from_two_instances_at_once_are_all_counted(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    instances = [Throttle(store, policy=POLICY), Throttle(other_store, policy=POLICY)]
    key = account_key("dave@nhs.net")
    concurrently(8, lambda i: instances[i % 2].record_failure(key))
    assert instances[0].check(key).failures == 8


GUARDED = ThrottlePolicy(free_failures=5, guard_failures=4)


def test_attempts_in_flight_count_against_the_guard_until_settled(
    store: Store, clock: FakeClock
) -> None:
    throttle = Throttle(store, policy=GUARDED)
    key = account_key("erin@nhs.net")
    assert [throttle.reserve(key).allowed for _ in range(5)] == [True] * 4 + [False]
    busy = throttle.reserve(key)
    assert not busy.allowed and not busy.blocked  # busy, not blocked: it may wait
    assert throttle.check(key).failures == 0  # nothing has failed yet

    assert throttle.settle(key, AttemptOutcome.FAILED) is not None  # one fails: f=1, p=3
    assert not throttle.reserve(key).allowed
    assert throttle.settle(key, AttemptOutcome.UNDECIDED) is None  # no answer: f=1, p=2
    assert throttle.reserve(key).allowed  # f=1, p=3
    assert throttle.settle(key, AttemptOutcome.SUCCEEDED) is None  # f forgotten, p=2
    assert throttle.check(key).failures == 0
    assert [throttle.reserve(key).allowed for _ in range(3)] == [True, True, False]

    # A booking whose worker died stops counting after a minute.
    clock.advance(timedelta(seconds=61))
    assert throttle.reserve(key).allowed


def test_failed_attempts_reach_the_guard_and_then_block(store: Store, clock: FakeClock) -> None:
    throttle = Throttle(store, policy=GUARDED)
    key = account_key("erin@nhs.net")
    for _ in range(4):
        assert throttle.reserve(key).allowed
        throttle.settle(key, AttemptOutcome.FAILED)
    blocked = throttle.reserve(key)
    assert not blocked.allowed and blocked.blocked
    assert blocked.retry_after == GUARDED.guard_window


def test_without_a_guard_attempts_in_flight_count_up_to_the_next_block(
    store: Store, clock: FakeClock
) -> None:
    # One free failure, and the second blocks: two attempts may be in flight, as many as
    # one at a time would be answered before the block.
    throttle = Throttle(store, policy=ThrottlePolicy(free_failures=1))
    key = address_key("192.0.2.8")
    assert [throttle.reserve(key).allowed for _ in range(3)] == [True, True, False]
    throttle.settle(key, AttemptOutcome.FAILED)
    throttle.settle(key, AttemptOutcome.FAILED)
    blocked = throttle.reserve(key)
    assert not blocked.allowed and blocked.blocked and blocked.key == key
    # Once the block is over, one attempt at a time: the next failure blocks again.
    clock.advance(timedelta(seconds=31))
    assert [throttle.reserve(key).allowed for _ in range(2)] == [True, False]


def test_bookings_whose_worker_died_go_stale_however_busy_the_address(
    store: Store, clock: FakeClock
) -> None:
    throttle = Throttle(store)
    nat = Booking(
        key=address_key("192.0.2.50"),
        policy=ThrottlePolicy(free_failures=30),
        forgotten_on_success=False,
    )
    allowed_at_once = ThrottlePolicy(free_failures=30).in_flight_allowed(0)
    # Five attempts whose workers died (a timeout, a kill): booked, never settled.
    for _ in range(5):
        assert throttle.reserve_all((nat,)).allowed
    # Then ordinary sign-ins from a hospital's shared address, one every 30 s.
    for _ in range(10):
        clock.advance(timedelta(seconds=30))
        assert throttle.reserve_all((nat,)).allowed
        throttle.settle_all((nat,), AttemptOutcome.SUCCEEDED)
    # The dead five no longer take any of the address's attempts in flight.
    at_once = 0
    while throttle.reserve_all((nat,)).allowed:
        at_once += 1
    assert at_once == allowed_at_once


def test_one_booking_covers_the_account_and_the_address(store: Store) -> None:
    throttle = Throttle(store)
    account = Booking(key=account_key("erin@nhs.net"), policy=GUARDED)
    address = Booking(
        key=address_key("192.0.2.9"),
        policy=ThrottlePolicy(free_failures=1),
        forgotten_on_success=False,
    )
    both = (account, address)
    assert throttle.reserve_all(both).allowed
    assert throttle.reserve_all(both).allowed
    busy = throttle.reserve_all(both)  # the address's two are in flight
    assert not busy.allowed and not busy.blocked and busy.key == address.key
    # Refused as a whole: nothing was booked against the account either.
    assert [throttle.reserve(account.key, policy=GUARDED).allowed for _ in range(3)] == [
        True
    ] * 2 + [False]
    throttle.settle(account.key, AttemptOutcome.UNDECIDED, policy=GUARDED)
    throttle.settle(account.key, AttemptOutcome.UNDECIDED, policy=GUARDED)

    assert throttle.settle_all(both, AttemptOutcome.FAILED)[0].failures == 1
    # A success forgets the account's failures, never the address's: a guesser must not
    # clear the address by signing in to an account of their own between guesses.
    assert throttle.settle_all(both, AttemptOutcome.SUCCEEDED) == ()
    assert throttle.check(account.key).failures == 0
    assert throttle.check(address.key).failures == 1
    assert throttle.reserve_all(both).allowed and not throttle.reserve_all(both).allowed


def test_an_attempt_with_no_answer_counts_against_the_account_not_the_address(
    store: Store,
) -> None:
    # The directory may count a bind it never answered: the account's guard counts it
    # too. The address does not: a hung directory must not block a shared address.
    throttle = Throttle(store)
    account = Booking(key=entry_key("uid=erin,ou=people,dc=nhs,dc=example"), policy=GUARDED)
    address = Booking(
        key=address_key("192.0.2.11"),
        policy=ThrottlePolicy(free_failures=1),
        forgotten_on_success=False,
        counted_unanswered=False,
    )
    both = (account, address)
    for failures in range(1, 5):
        assert throttle.reserve_all(both).allowed
        (state,) = throttle.settle_all(both, AttemptOutcome.UNANSWERED)
        assert state.key == account.key and state.failures == failures
    assert throttle.check(address.key).failures == 0
    # Four, the guard: blocked for the directory's window, with nothing left in flight.
    blocked = throttle.reserve_all(both)
    assert blocked.blocked and blocked.key == account.key
    assert blocked.retry_after == GUARDED.guard_window
    assert throttle.reserve_all((address,)).allowed
    # Nothing reached the directory's verdict: nothing counted.
    assert throttle.settle_all((address,), AttemptOutcome.UNDECIDED) == ()


def test_two_instances_booking_an_address_at_once_never_pass_its_limit(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    instances = [Throttle(store, policy=POLICY), Throttle(other_store, policy=POLICY)]
    key = address_key("192.0.2.10")
    booked = concurrently(12, lambda i: instances[i % 2].reserve(key).allowed)
    assert booked.count(True) == POLICY.free_failures + 1


def test_two_instances_booking_at_once_never_pass_the_guard(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    instances = [Throttle(store, policy=GUARDED), Throttle(other_store, policy=GUARDED)]
    key = account_key("dave@nhs.net")
    booked = concurrently(12, lambda i: instances[i % 2].reserve(key).allowed)
    assert booked.count(True) == 4


# A directory that locks at 5 failures within 30 minutes, behind a 15-minute window.
LONG_GUARD = ThrottlePolicy(
    free_failures=5,
    window=timedelta(minutes=15),
    guard_failures=4,
    guard_window=timedelta(minutes=30),
)


def test_the_guard_counts_failures_over_the_directorys_window_not_the_throttles(
    store: Store, clock: FakeClock
) -> None:
    throttle = Throttle(store, policy=LONG_GUARD)
    key = account_key("frank@nhs.net")
    for _ in range(3):
        assert throttle.reserve(key).allowed
        throttle.settle(key, AttemptOutcome.FAILED)
    # Past the throttle's own window, still inside the directory's: the directory has
    # seen three failures, so one more is the most the broker may let through.
    clock.advance(timedelta(minutes=16))
    assert throttle.reserve(key).allowed
    assert throttle.settle(key, AttemptOutcome.FAILED) is not None
    refused = throttle.reserve(key)
    assert not refused.allowed and refused.blocked
    assert throttle.check(key).failures == 4


def test_the_guard_forgets_only_once_the_directory_has(store: Store, clock: FakeClock) -> None:
    throttle = Throttle(store, policy=LONG_GUARD)
    key = account_key("grace@nhs.net")
    throttle.record_failure(key)
    clock.advance(timedelta(minutes=29))
    throttle.record_failure(key)
    # Counted from the last failure, as the directory counts: a failure 29 minutes
    # after the first keeps the first in its window.
    clock.advance(timedelta(minutes=29))
    assert throttle.record_failure(key).failures == 3
    clock.advance(timedelta(minutes=30))
    assert throttle.record_failure(key).failures == 1


def test_without_a_guard_the_throttles_window_alone_counts(store: Store, clock: FakeClock) -> None:
    throttle = Throttle(store, policy=POLICY)
    key = address_key("192.0.2.9")
    throttle.record_failure(key)
    clock.advance(timedelta(minutes=16))
    assert throttle.record_failure(key).failures == 1
