"""Accepting the acceptable use policy at sign-in, for a directory the broker may write.

A password sign-in refused only because the current policy is not accepted can record
the acceptance here, but only for the account whose password was just checked in this
browser: the check stores a short-lived, single-use step (a broker-local login
transaction, as registration's steps are) whose id only the browser's session holds.
Knowing an email address is not enough to accept the policy for someone.

The step keeps when the password was checked: the sign-in it finishes is dated from
then (`SigninDecision.auth_time`), not from the click that accepts the policy, which
proves nothing about who is at the keyboard. A step stored by an older broker, without
that time, is dated from when it was stored: in the same request, just after the check.

A card sign-in cannot record it (nothing the person typed proves they read anything), so
its refusal sends the person here by email and password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from careid_broker.codes import BrokerCode
from careid_broker.directory import Directory, MailAccount
from careid_broker.errors import BrokerError, DirectoryReadOnlyError
from careid_broker.store import (
    AuthorizationRequest,
    LoginTransactionRecord,
    LoginTransactions,
    TransactionStatus,
    instant_for_extras,
    instant_from_extras,
)
from careid_broker.store.subjects import normalise_mail

#: The client id of acceptance steps: no registered client has it, so the OpenID
#: Provider can never issue a code for one.
AUP_CLIENT_ID = "careid-broker:aup"
PURPOSE = "aup"
#: How long after the password check the policy may be accepted.
ACCEPT_WITHIN = timedelta(minutes=10)


class AupStepExpiredError(BrokerError):
    """No password was checked for an acceptance in this browser (expired, used, none)."""

    default_code = BrokerCode.OIDC_SIGNIN_EXPIRED


@dataclass(frozen=True, kw_only=True)
class PendingAcceptance:
    """An account whose password this browser just proved, with the policy to accept."""

    id: str
    """The transaction id: a secret held only in the browser's session."""
    mail: str
    dn: str
    display_name: str
    return_tx: str | None
    """The relying party's login transaction to carry on with afterwards."""
    sign_in: bool
    """Sign the person in by password once accepted (False: they go on by card)."""
    checked_at: datetime
    """When the password was checked: the auth_time of the sign-in this step finishes."""
    expires_at: datetime


class AupAcceptance:
    """Records acceptance of the current policy for a just-checked account."""

    def __init__(
        self,
        *,
        issuer: str,
        directory: Directory,
        transactions: LoginTransactions,
        writable: bool,
        clock: Callable[[], datetime],
    ) -> None:
        self._issuer = issuer
        self._directory = directory
        self._transactions = transactions
        self._writable = writable
        self._clock = clock

    @property
    def writable(self) -> bool:
        """Whether this deployment can record acceptance (`[directory] writable`)."""
        return self._writable

    @property
    def current_version(self) -> str:
        """The policy version a person accepts here."""
        return self._directory.current_aup_version

    def begin(
        self, account: MailAccount, *, return_tx: str | None, sign_in: bool
    ) -> PendingAcceptance:
        """Store the step for an account whose password was just checked (in this
        request: now is when it was checked)."""
        if not self._writable:
            raise DirectoryReadOnlyError(detail="directory.writable is false")
        extras: dict[str, Any] = {
            "purpose": PURPOSE,
            "mail": account.mail,
            "dn": account.dn,
            "display_name": account.display_name,
            "return_tx": return_tx,
            "sign_in": sign_in,
            "checked_at": instant_for_extras(self._clock()),
        }
        created = self._transactions.create(
            AuthorizationRequest(
                client_id=AUP_CLIENT_ID,
                redirect_uri=f"{self._issuer}/login/aup",
                scope="",
                extras=extras,
            )
        )
        pending = _from_record(created.transaction_id, created.record)
        assert pending is not None  # noqa: S101 - made just above from a valid step
        return pending

    def pending(self, pending_id: str | None) -> PendingAcceptance:
        """The browser's step, or `AupStepExpiredError`."""
        record = self._transactions.get(pending_id) if pending_id else None
        found = _from_record(pending_id, record) if pending_id and record else None
        if found is None:
            raise AupStepExpiredError(detail="no pending acceptance step")
        return found

    def accept(self, pending: PendingAcceptance) -> MailAccount:
        """Record acceptance of the current version; the account as re-read afterwards.

        The step is used up first, so one password check records at most one
        acceptance. Raises `AupStepExpiredError` (used, expired, or the account is no
        longer the one checked), `DirectoryReadOnlyError` or `DirectoryUnavailableError`;
        `AupRecordedButUnreadError` once the directory has recorded it but the account
        cannot be read back.
        """
        account = self._directory.find_account(pending.mail)
        if (
            account is None
            or normalise_mail(account.mail) != normalise_mail(pending.mail)
            or account.dn.casefold() != pending.dn.casefold()
        ):
            raise AupStepExpiredError(detail="the checked account is no longer in the directory")
        if self._transactions.complete(pending.id) is None:
            raise AupStepExpiredError(detail="accepted already, or expired")
        return self._directory.accept_aup(account, self._directory.current_aup_version)

    def check(self, account: MailAccount) -> None:
        """Raise the account's first refusal now, if any (the policy accepted or not)."""
        self._directory.check_account(account)


def _from_record(pending_id: str, record: LoginTransactionRecord) -> PendingAcceptance | None:
    if record.request.client_id != AUP_CLIENT_ID or record.status is not TransactionStatus.PENDING:
        return None
    extras = record.request.extras
    mail, dn, name = extras.get("mail"), extras.get("dn"), extras.get("display_name")
    return_tx = extras.get("return_tx")
    if extras.get("purpose") != PURPOSE or not isinstance(mail, str) or not isinstance(dn, str):
        return None
    return PendingAcceptance(
        id=pending_id,
        mail=mail,
        dn=dn,
        display_name=name if isinstance(name, str) else mail,
        return_tx=return_tx if isinstance(return_tx, str) else None,
        sign_in=extras.get("sign_in") is True,
        # An older broker's step kept no time: it was stored just after the check.
        checked_at=instant_from_extras(extras.get("checked_at")) or record.created_at,
        expires_at=record.expires_at,
    )
