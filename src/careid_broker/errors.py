"""The broker's error classes: one root, a subclass per thing that went wrong.

Each carries a stable `code` (a `careid-auth:1` code from `careid_protocol.errors`, or the
broker's own from `careid_broker.codes`: what a login page or an API client switches on),
the HTTP `status` it is answered with and a plain `message` for the person in front of
the screen. `detail` is for the operator's log only — never shown to users, and never
holding a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from careid_broker.codes import BrokerCode, Code, message_for, status_for
from careid_protocol.errors import ErrorCode


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""

    default_code: ClassVar[Code | None] = None

    def __init__(
        self,
        code: Code | None = None,
        message: str | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        resolved = code if code is not None else self.default_code
        if resolved is None:
            raise TypeError(f"{type(self).__name__} needs an error code")
        self.code: Code = resolved
        self.message: str = message if message is not None else message_for(resolved)
        self.detail: str | None = detail
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status this refusal is answered with."""
        return status_for(self.code)

    def __str__(self) -> str:
        if self.detail:
            return f"{self.code}: {self.message} ({self.detail})"
        return f"{self.code}: {self.message}"


# The directory and password sign-in.


class DirectoryUnavailableError(BrokerError):
    """The directory did not answer, or answered with an error: the broker denies."""

    default_code = BrokerCode.DIRECTORY_UNAVAILABLE


class BindUnansweredError(DirectoryUnavailableError):
    """A password bind was sent, or may have been, and no answer came.

    The directory may still take it when it wakes up and count a failed bind towards its
    own lockout, so the sign-in counts the attempt against the account; the person is
    answered as for any directory that does not answer.
    """


class DirectoryReadOnlyError(BrokerError):
    """A change was asked of a directory configured read-only."""

    default_code = BrokerCode.DIRECTORY_READ_ONLY


class DirectoryDataError(BrokerError):
    """A directory entry the decision depends on is ambiguous or malformed."""

    default_code = BrokerCode.DIRECTORY_DATA_INVALID


class DirectoryConfigError(BrokerError):
    """The directory configuration is not valid; `problems` names each fault."""

    default_code = BrokerCode.DIRECTORY_CONFIG_INVALID

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(detail="; ".join(self.problems))


class InvalidCredentialsError(BrokerError):
    """Unknown user, wrong password or a locked account: deliberately the same answer for
    each, so nobody learns which addresses are real. `reason` is the real one, for the
    audit only."""

    default_code = BrokerCode.INVALID_CREDENTIALS

    def __init__(self, *, reason: Code | None = None, detail: str | None = None) -> None:
        super().__init__(detail=detail)
        self.reason: Code = reason if reason is not None else self.code


class AccountLockedError(BrokerError):
    """The directory's own lockout refused the bind."""

    default_code = BrokerCode.ACCOUNT_LOCKED


class AccountDisabledError(BrokerError):
    """The mail account is disabled."""

    default_code = BrokerCode.ACCOUNT_DISABLED


class AccountExpiredError(BrokerError):
    """The mail account's expiry time has passed."""

    default_code = BrokerCode.ACCOUNT_EXPIRED


class PasswordExpiredError(BrokerError):
    """The directory accepted the password but says it must be changed first."""

    default_code = BrokerCode.PASSWORD_EXPIRED


class AupNotAcceptedError(BrokerError):
    """The current acceptable use policy version has not been accepted."""

    default_code = BrokerCode.AUP_NOT_ACCEPTED


class CareIdentityNotFoundError(BrokerError):
    """No Care Identity record exists for the account or certificate."""

    default_code = BrokerCode.CARE_IDENTITY_NOT_FOUND


class CareIdentityInactiveError(BrokerError):
    """The Care Identity record exists but is not active."""

    default_code = BrokerCode.CARE_IDENTITY_INACTIVE


class RegistrationAccountChangedError(BrokerError):
    """The directory entry holding a registration's address is not the entry it was
    registered for: the address was given to someone else."""

    default_code = BrokerCode.REGISTRATION_ACCOUNT_CHANGED


# Certificate validation (`careid_broker.pki`).


class PkiConfigError(BrokerError):
    """The `[pki]` settings are not valid; `problems` names each fault."""

    default_code = BrokerCode.BROKER_CONFIG_INVALID

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(detail="; ".join(self.problems))


class CertificateMalformedError(BrokerError):
    """The card's certificate cannot be parsed."""

    default_code = ErrorCode.CERTIFICATE_MALFORMED


class CertificateUntrustedError(BrokerError):
    """No valid chain leads from the certificate to a configured trust anchor."""

    default_code = ErrorCode.CERTIFICATE_UNTRUSTED


class CertificateKeyUnsupportedError(BrokerError):
    """A certificate in the chain has a key of a type or size the broker does not accept."""

    default_code = ErrorCode.CERTIFICATE_KEY_UNSUPPORTED


class CertificateExpiredError(BrokerError):
    """The certificate's notAfter has passed, beyond the allowed clock skew."""

    default_code = ErrorCode.CERTIFICATE_EXPIRED


class CertificateNotYetValidError(BrokerError):
    """The certificate's notBefore is in the future, beyond the allowed clock skew."""

    default_code = ErrorCode.CERTIFICATE_NOT_YET_VALID


class CertificateUsageError(BrokerError):
    """The certificate may not be used to sign in (keyUsage / extendedKeyUsage)."""

    default_code = ErrorCode.CERTIFICATE_USAGE


class CertificatePolicyError(BrokerError):
    """A required certificate policy is missing, or a disallowed one is asserted."""

    default_code = ErrorCode.CERTIFICATE_POLICY


class CertificateRevokedError(BrokerError):
    """The issuer says the certificate is revoked (or, over OCSP, does not know it)."""

    default_code = ErrorCode.CERTIFICATE_REVOKED


class AuthorityRevokedError(CertificateRevokedError):
    """A CA certificate in the card's chain is on its issuer's CRL: the card is refused as
    revoked, and which CA it was is kept for the audit trail."""

    def __init__(self, *, ca_subject: str, ca_serial: str, detail: str) -> None:
        super().__init__(detail=detail)
        self.ca_subject = ca_subject
        """The revoked CA certificate's subject (RFC 4514)."""
        self.ca_serial = ca_serial
        """Its serial number, in hex."""


class RevocationUnavailableError(BrokerError):
    """No trustworthy, fresh revocation status could be obtained: the broker denies."""

    default_code = ErrorCode.REVOCATION_UNAVAILABLE


class IdentityMissingError(BrokerError):
    """The certificate names no Care Identity UUID under the configured rule."""

    default_code = ErrorCode.IDENTITY_MISSING
