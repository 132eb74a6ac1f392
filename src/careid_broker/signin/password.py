"""Password sign-in: throttling, an LDAP bind as the user, then the account checks.

The order matters. Throttling is checked first, so a blocked guesser costs the
directory nothing. Then the attempt is booked against the account's guard (one failure
short of the directory's own lockout) before the bind, so that guesses sent all at once
cannot get past it between the check and the count (`Throttle.reserve`). The password
is checked before anything about the account is revealed: a refused account (disabled,
policy not accepted) is only named to someone who knew its password. Unknown address,
wrong password and a locked account are one error, answered no sooner than a fixed
floor after the directory was asked, so their answer times do not tell them apart
either.
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
    BrokerError,
    InvalidCredentialsError,
)
from careid_broker.store import (
    AttemptOutcome,
    Throttle,
    ThrottlePolicy,
    ThrottleState,
    account_key,
    address_key,
)

log = logging.getLogger(__name__)

#: How often a sign-in waiting for the account's attempts in flight looks again, and
#: when it is told to come back if they do not settle within `busy_wait`.
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
        `DirectoryUnavailableError`. The account checks
        (disabled, expired, AUP, unreadable data) come back as `PasswordCheck.refusal`.
        """
        keys = (account_key(mail), address_key(client_address))
        states = self._throttle.check_many(keys)  # read only: a blocked guesser writes nothing
        blocked = [state for state in states if state.blocked]
        if blocked:
            raise SigninThrottledError(
                max(state.retry_after for state in blocked),
                detail=", ".join(state.key.split(":", 1)[0] for state in blocked),
            )
        self._book(keys[0])
        outcome = AttemptOutcome.UNDECIDED  # no answer from the directory: nothing counted
        asked = self._monotonic()
        try:
            account = self._directory.authenticate(mail, password)
            # Accepted: the account's failures are forgotten when the attempt is settled.
            # The address counter is left alone: a guesser must not clear it by signing
            # in to an account of their own between guesses.
            outcome = AttemptOutcome.SUCCEEDED
        except InvalidCredentialsError:
            outcome = AttemptOutcome.FAILED
            self._count_failure(keys[1], self._policies.address)
            self._wait_out_floor(asked)
            raise
        except AccountLockedError as exc:
            # Locked in the directory (by its own policy, or an administrator): answered
            # as a wrong password, so a stranger cannot tell the address is real; the
            # audit keeps the real reason. Both counters go on counting as for any
            # failure, so the answers stay the same in every respect.
            outcome = AttemptOutcome.FAILED
            self._count_failure(keys[1], self._policies.address)
            self._wait_out_floor(asked)
            raise InvalidCredentialsError(
                reason=BrokerCode.ACCOUNT_LOCKED, detail=exc.detail
            ) from exc
        finally:
            if outcome is AttemptOutcome.SUCCEEDED:
                # Rides on the commit the sign-in makes next (its session), if any.
                self._throttle.settle_later(keys[0], outcome, policy=self._policies.account)
            else:
                state = self._throttle.settle(keys[0], outcome, policy=self._policies.account)
                if state is not None:
                    _log_block(state)
        try:
            self._directory.check_account(account)
        except BrokerError as refusal:
            return PasswordCheck(account=account, refusal=refusal)
        return PasswordCheck(account=account, refusal=None)

    def _book(self, key: str) -> None:
        """Book this attempt against the account's guard, waiting a moment while the
        attempts already in flight would use it up (they may all fail): however many
        requests for one account arrive at once, the directory never sees more failed
        binds than the guard allows (`Throttle.reserve`). Without a guard there is nothing
        to book: the blocks were read just before."""
        if self._policies.account.guard_failures is None:
            return
        deadline = self._monotonic() + self._busy_wait
        while True:
            booking = self._throttle.reserve(key, policy=self._policies.account)
            if booking.allowed:
                return
            if booking.blocked:
                raise SigninThrottledError(booking.retry_after, detail="account")
            if self._monotonic() >= deadline:
                raise SigninThrottledError(BUSY_RETRY, detail="account: attempts in flight")
            self._sleep(BUSY_POLL.total_seconds())

    def throttle_state(self, mail: str, client_address: str) -> tuple[ThrottleState, ...]:
        """Where the account and the address stand (for tests and the admin console)."""
        return self._throttle.check_many((account_key(mail), address_key(client_address)))

    def _wait_out_floor(self, asked: float) -> None:
        """Hold a refusal until the floor has passed since the directory was asked."""
        remaining = self._failure_floor - (self._monotonic() - asked)
        if remaining > 0:
            self._sleep(remaining)

    def _count_failure(self, key: str, policy: ThrottlePolicy) -> None:
        _log_block(self._throttle.record_failure(key, policy=policy))


def _log_block(state: ThrottleState) -> None:
    if state.blocked:
        log.warning(
            "sign-in throttled: %s blocked for %ds after %d failures",
            state.key.split(":", 1)[0],
            int(state.retry_after.total_seconds()),
            state.failures,
        )
