"""May this account sign in, may this Care Identity be used? Pure checks, no I/O.

Kept apart from the LDAP adapter so a fake directory in the services' tests applies
exactly the same rules.
"""

from __future__ import annotations

from datetime import datetime

from careid_broker.directory.models import CareIdentity, MailAccount
from careid_broker.errors import (
    AccountDisabledError,
    AccountExpiredError,
    AupNotAcceptedError,
    CareIdentityInactiveError,
    CareIdentityNotFoundError,
    DirectoryDataError,
)


def account_refusals(
    account: MailAccount, *, now: datetime, current_aup_version: str
) -> list[DirectoryDataError | AccountDisabledError | AccountExpiredError | AupNotAcceptedError]:
    """Every reason the account may not sign in, most fundamental first.

    Registration names each missing prerequisite, so it wants them all; sign-in raises
    the first (`check_account`).
    """
    refusals: list[
        DirectoryDataError | AccountDisabledError | AccountExpiredError | AupNotAcceptedError
    ] = []
    if account.problems:
        refusals.append(DirectoryDataError(detail=f"{account.dn}: {'; '.join(account.problems)}"))
    if not account.active:
        refusals.append(AccountDisabledError(detail=account.dn))
    if account.expires is not None and now >= account.expires:
        refusals.append(AccountExpiredError(detail=f"{account.dn} expired {account.expires}"))
    accepted = (account.aup_version or "").strip().casefold()
    if accepted != current_aup_version.strip().casefold():
        refusals.append(
            AupNotAcceptedError(
                detail=f"{account.dn} accepted {account.aup_version!r},"
                f" current is {current_aup_version!r}"
            )
        )
    return refusals


def check_account(account: MailAccount, *, now: datetime, current_aup_version: str) -> None:
    """Raise the first reason the account may not sign in; return if it may."""
    refusals = account_refusals(account, now=now, current_aup_version=current_aup_version)
    if refusals:
        raise refusals[0]


def check_care_identity(identity: CareIdentity | None) -> CareIdentity:
    """The record, if it exists and is active; else the reason it may not be used."""
    if identity is None:
        raise CareIdentityNotFoundError()
    if not identity.active:
        raise CareIdentityInactiveError(detail=f"{identity.dn} status {identity.status!r}")
    return identity
