"""Local administration's own errors (under the broker's `BrokerError` root)."""

from __future__ import annotations

from careid_broker.codes import BrokerCode
from careid_broker.errors import BrokerError


class NotAnAdministratorError(BrokerError):
    """The signed-in person is not a local administrator of any organisation."""

    default_code = BrokerCode.ADMIN_NOT_AUTHORISED


class OutOfScopeError(BrokerError):
    """The account or registration does not exist, or is not in the caller's organisations.

    Deliberately one error for both: an administrator must not learn, by probing, that
    someone exists in another organisation.
    """

    default_code = BrokerCode.REGISTRATION_NOT_FOUND


class RemovalReasonError(BrokerError):
    """A removal was asked for without a usable reason."""

    default_code = BrokerCode.ADMIN_REASON_REQUIRED


class RegistrationChangedError(BrokerError):
    """The registration confirmed for removal is no longer the one stored."""

    default_code = BrokerCode.ADMIN_REGISTRATION_CHANGED
