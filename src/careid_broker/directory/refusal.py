"""Turn a refused user bind into the error the person at the screen should see."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from careid_broker.directory.bindresult import (
    PPOLICY_CONTROL_OID,
    AdBindSubcode,
    PasswordPolicyError,
    parse_ad_subcode,
    parse_ppolicy_error,
)
from careid_broker.errors import (
    AccountDisabledError,
    AccountExpiredError,
    AccountLockedError,
    BrokerError,
    DirectoryUnavailableError,
    InvalidCredentialsError,
    PasswordExpiredError,
)

log = logging.getLogger(__name__)

RESULT_INVALID_CREDENTIALS = 49

# AD only sends these once the password was right (bar 775, sent whenever locked), so
# naming them tells a guesser nothing a right password would not.
_AD_REASONS: dict[int, type[BrokerError]] = {
    AdBindSubcode.ACCOUNT_LOCKED: AccountLockedError,
    AdBindSubcode.ACCOUNT_DISABLED: AccountDisabledError,
    AdBindSubcode.ACCOUNT_EXPIRED: AccountExpiredError,
    AdBindSubcode.PASSWORD_EXPIRED: PasswordExpiredError,
    AdBindSubcode.MUST_RESET_PASSWORD: PasswordExpiredError,
}

_PPOLICY_REASONS: dict[int, type[BrokerError]] = {
    PasswordPolicyError.ACCOUNT_LOCKED: AccountLockedError,
    PasswordPolicyError.PASSWORD_EXPIRED: PasswordExpiredError,
    PasswordPolicyError.CHANGE_AFTER_RESET: PasswordExpiredError,
}


def refusal_for(result: Mapping[str, Any]) -> BrokerError:
    """The error for an unsuccessful bind result (ldap3's `connection.result`)."""
    code = result.get("result")
    if code != RESULT_INVALID_CREDENTIALS:
        # Not a verdict on the password (e.g. unwillingToPerform, busy): deny, and tell
        # the operator, without blaming the user's typing.
        return DirectoryUnavailableError(
            detail=f"user bind failed: {code} {result.get('description')}"
        )
    reason = _ppolicy_reason(result) or _ad_reason(str(result.get("message") or ""))
    if reason is not None:
        return reason()
    return InvalidCredentialsError()


def restriction_after_bind(result: Mapping[str, Any]) -> BrokerError | None:
    """The error for a successful bind that the password policy restricts, if any.

    OpenLDAP lets a user whose password was reset by an administrator bind, but only to
    change it (changeAfterReset): that is not a sign-in.
    """
    reason = _ppolicy_reason(result)
    return reason() if reason is PasswordExpiredError else None


def _ppolicy_reason(result: Mapping[str, Any]) -> type[BrokerError] | None:
    controls = result.get("controls") or {}
    control = controls.get(PPOLICY_CONTROL_OID)
    if not isinstance(control, Mapping):
        return None
    value = control.get("value")
    if not isinstance(value, bytes):
        return None
    try:
        error = parse_ppolicy_error(value)
    except ValueError as exc:
        log.warning("ignoring a malformed password policy response control: %s", exc)
        return None
    return _PPOLICY_REASONS.get(error) if error is not None else None


def _ad_reason(diagnostic: str) -> type[BrokerError] | None:
    subcode = parse_ad_subcode(diagnostic)
    return _AD_REASONS.get(subcode) if subcode is not None else None
