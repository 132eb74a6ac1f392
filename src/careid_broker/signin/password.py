"""Password sign-in: throttling, an LDAP bind as the user, then the account checks.

The order matters. The client address's block is read first, so a blocked guesser costs
the directory nothing. The directory is then searched for the address typed, and the
attempt is booked before the bind (`Throttle.reserve_all`) against the client address
and against the account: the entry found, whichever of its mail addresses was typed,
since the directory counts failed binds per entry; or the typed address when no entry
has it, so an unknown address costs the same round trips and gets the same answers. A
booking counts as a failure until the attempt is answered, so guesses sent all at once
get no further than the same guesses one at a time: never more failed binds than one
short of the directory's own lockout (the account's guard), nor past the address's
limit. A bind that may have reached the directory and got no answer counts as a failure
against the account (not the address): a directory that hangs may still take it, and
count it, when it wakes up. The password is checked before anything about the account is
revealed: a refused account (disabled, policy not accepted) is only named to someone who
knew its password. Unknown address, wrong password and a locked account are one error,
answered no sooner than a fixed floor after the directory was asked, so their answer
times do not tell them apart either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from careid_broker.codes import BrokerCode
from careid_broker.directory import Directory, MailAccount
from careid_broker.errors import (
    AccountLockedError,
    BindUnansweredError,
    BrokerError,
    InvalidCredentialsError,
)
from careid_broker.store import (
    AttemptOutcome,
    Booking,
    Throttle,
    ThrottlePolicy,
    ThrottleState,
    account_key,
    address_key,
    entry_key,
)

log = logging.getLogger(__name__)

#: How often a sign-in waiting for the attempts in flight (the account's or the client
#: address's) looks again, and when it is told to come back if they do not settle within
#: `busy_wait`.
BUSY_POLL = timedelta(milliseconds=20)
BUSY_RETRY = timedelta(seconds=5)


class SigninThrottledError(BrokerError):
    """Too many recent failures for this account or this client address."""

    default_code = BrokerCode.SIGNIN_THROTTLED

    def __init__(self, retry_after: timedelta, *, detail: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(detail=detail)


@dataclass(frozen=True, kw_only=True)
class ThrottlePolicies:
    """Separate allowances: one person's account, and one client address (shared by many)."""

    account: ThrottlePolicy
    address: ThrottlePolicy


@dataclass(frozen=True, kw_only=True)
class PasswordCheck:
    """A password the directory accepted, and the first reason the account may not sign in.

    The account is returned with its refusal so the refusal can be audited against the
    account's organisation.
    """

    account: MailAccount
    refusal: BrokerError | None

    @property
    def allowed(self) -> bool:
        """True when the account may sign in."""
        return self.refusal is None


class PasswordSignin:
    """Checks an email address and password; the account if it may sign in."""

    def __init__(
        self,
        *,
        directory: Directory,
        throttle: Throttle,
        policies: ThrottlePolicies,
        failure_floor: timedelta = timedelta(0),
        busy_wait: timedelta = timedelta(seconds=2),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._directory = directory
        self._throttle = throttle
        self._policies = policies
        self._failure_floor = failure_floor.total_seconds()
        self._busy_wait = busy_wait.total_seconds()
        self._monotonic = monotonic
        self._sleep = sleep

    def check(self, mail: str, password: str, *, client_address: str) -> PasswordCheck:
        """The account and its verdict; raises when the password itself was not accepted.

        Raises `SigninThrottledError`, `InvalidCredentialsError` (for a locked account
        too: its `reason` says so), `PasswordExpiredError` or
        `DirectoryUnavailableError` (`BindUnansweredError` when the bind got no answer:
        counted against the account). The account checks
        (disabled, expired, AUP, unreadable data) come back as `PasswordCheck.refusal`.
        """
        address = address_key(client_address)
        # Read only, before the directory is asked: a blocked address costs it nothing
        # and writes nothing.
        (state,) = self._throttle.check_many((address,))
        if state.blocked:
            raise SigninThrottledError(state.retry_after, detail="addr")
        booked: list[Booking] = []

        def book(account: MailAccount | None) -> None:
            # Between the search and the bind: the entry is known, nothing is asked of
            # it yet. An attempt refused here never reaches the bind.
            bookings = self._bookings(mail, account, address)
            self._book(bookings)
            booked.extend(bookings)

        # No verdict and no bind left (the search failed, no connection), or an answer
        # that is no verdict: nothing counted.
        outcome = AttemptOutcome.UNDECIDED
        asked = self._monotonic()
        try:
            account = self._directory.authenticate(mail, password, before_bind=book)
            # Accepted: the account's failures are forgotten when the attempt is settled.
            # The address counter is left alone: a guesser must not clear it by signing
            # in to an account of their own between guesses.
            outcome = AttemptOutcome.SUCCEEDED
        except BindUnansweredError:
            # The bind may be in the directory's hands, to be counted as a failure when it
            # wakes up: counted against the account's guard now, so that the guesses
            # still allowed cannot take the directory to its lockout. Answered as any
            # directory that does not answer.
            outcome = AttemptOutcome.UNANSWERED
            raise
        except InvalidCredentialsError:
            outcome = AttemptOutcome.FAILED
            self._settle(booked, outcome)
            self._wait_out_floor(asked)
            raise
        except AccountLockedError as exc:
            # Locked in the directory (by its own policy, or an administrator): answered
            # as a wrong password, so a stranger cannot tell the address is real; the
            # audit keeps the real reason. Both counters go on counting as for any
            # failure, so the answers stay the same in every respect.
            outcome = AttemptOutcome.FAILED
            self._settle(booked, outcome)
            self._wait_out_floor(asked)
            raise InvalidCredentialsError(
                reason=BrokerCode.ACCOUNT_LOCKED, detail=exc.detail
            ) from exc
        finally:
            if outcome is not AttemptOutcome.FAILED:
                self._settle(booked, outcome)
        try:
            self._directory.check_account(account)
        except BrokerError as refusal:
            return PasswordCheck(account=account, refusal=refusal)
        return PasswordCheck(account=account, refusal=None)

    def _bookings(
        self, mail: str, account: MailAccount | None, address: str
    ) -> tuple[Booking, Booking]:
        """What an attempt counts against: the account (the entry found, else the typed
        address) and the client address (its `address_key`)."""
        key = entry_key(account.dn) if account is not None else account_key(mail)
        return (
            Booking(key=key, policy=self._policies.account),
            Booking(
                key=address,
                policy=self._policies.address,
                forgotten_on_success=False,
                # A directory that hangs must not block everyone behind a shared address;
                # an attempt with no answer told its sender nothing.
                counted_unanswered=False,
            ),
        )

    def _book(self, bookings: tuple[Booking, ...]) -> None:
        """Book this attempt, waiting a moment while the attempts already in flight
        would use up what the account or the address allows (they may all fail):
        however many requests arrive at once, the directory sees no more failed binds
        than the same requests one at a time would cause (`Throttle.reserve_all`)."""
        deadline: float | None = None
        while True:
            booking = self._throttle.reserve_all(bookings)
            if booking.allowed:
                return
            detail = (booking.key or "").split(":", 1)[0]
            if booking.blocked:
                raise SigninThrottledError(booking.retry_after, detail=detail)
            now = self._monotonic()
            if deadline is None:
                deadline = now + self._busy_wait
            elif now >= deadline:
                raise SigninThrottledError(BUSY_RETRY, detail=f"{detail}: attempts in flight")
            self._sleep(BUSY_POLL.total_seconds())

    def _settle(self, booked: list[Booking], outcome: AttemptOutcome) -> None:
        """End a booked attempt. A success rides on the commit the sign-in makes next
        (its session), if any; a failure or no answer is settled at once, so the
        attempts waiting on it may go ahead (or learn of the block it caused)."""
        if not booked:
            return  # refused before any bind: nothing was booked, nothing is counted
        if outcome is AttemptOutcome.SUCCEEDED:
            self._throttle.settle_later(booked, outcome)
            return
        for state in self._throttle.settle_all(booked, outcome):
            _log_block(state)

    def throttle_state(self, mail: str, client_address: str) -> tuple[ThrottleState, ...]:
        """Where the account and the address stand (for tests and the admin console): the
        account is looked up in the directory, as a sign-in would."""
        account = self._directory.find_account(mail)
        bookings = self._bookings(mail, account, address_key(client_address))
        return self._throttle.check_many([booking.key for booking in bookings])

    def _wait_out_floor(self, asked: float) -> None:
        """Hold a refusal until the floor has passed since the directory was asked."""
        remaining = self._failure_floor - (self._monotonic() - asked)
        if remaining > 0:
            self._sleep(remaining)


def _log_block(state: ThrottleState) -> None:
    if state.blocked:
        log.warning(
            "sign-in throttled: %s blocked for %ds after %d failures",
            state.key.split(":", 1)[0],
            int(state.retry_after.total_seconds()),
            state.failures,
        )
