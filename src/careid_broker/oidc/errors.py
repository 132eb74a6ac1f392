"""The OpenID Provider's own errors (under the broker's `BrokerError` root).

Protocol errors sent to relying parties are authlib's `OAuth2Error` classes, each with
its RFC 6749 / OIDC wire code; these are for people: administrators reading a
configuration report, users shown an error page.
"""

from __future__ import annotations

from collections.abc import Sequence

from careid_broker.codes import BrokerCode
from careid_broker.errors import BrokerError


class OidcConfigError(BrokerError):
    """The `[oidc]` settings or the clients file are not valid; `problems` names each."""

    default_code = BrokerCode.OIDC_CONFIG_INVALID

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(detail="; ".join(self.problems))


class UntrustedAuthorizationRequestError(BrokerError):
    """An authorization request whose redirect URI cannot be trusted: shown, not sent."""

    default_code = BrokerCode.OIDC_REQUEST_INVALID


class SigninExpiredError(BrokerError):
    """The login transaction is unknown, expired or already completed."""

    default_code = BrokerCode.OIDC_SIGNIN_EXPIRED


class ClientKeysUnavailableError(BrokerError):
    """A private_key_jwt client's keys (inline or `jwks_uri`) could not be loaded."""

    default_code = BrokerCode.OIDC_CLIENT_KEYS_UNAVAILABLE
