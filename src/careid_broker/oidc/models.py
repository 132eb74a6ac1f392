"""Adapters between the store's frozen records and the objects authlib's grants expect.

authlib asks for a client, an authorization code and a token as objects with
`get_…`/`check_…` methods (its `ClientMixin`, `AuthorizationCodeMixin`, `TokenMixin`);
these wrap the broker's own records so nothing else needs to know authlib's shapes.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin

from careid_broker.oidc.claims import scope_values
from careid_broker.oidc.clients import ClientRecord
from careid_broker.store import CodeGrant


@dataclass(frozen=True, kw_only=True)
class SignedInUser:
    """The resource owner of a grant: who signed in, how, and their claims then."""

    sub: str
    sid: str
    account_mail: str
    acr: str
    amr: tuple[str, ...]
    auth_time: datetime
    claims: Mapping[str, Any] = field(default_factory=dict)


class OAuthClient(ClientMixin):  # type: ignore[misc]
    """A declared client as authlib's `ClientMixin`."""

    def __init__(self, record: ClientRecord) -> None:
        self.record = record
        self.client_id = record.client_id

    @property
    def client_metadata(self) -> dict[str, Any]:
        """RFC 7591 metadata authlib's endpoints read (post-logout URIs, userinfo alg)."""
        return {
            "post_logout_redirect_uris": list(self.record.post_logout_redirect_uris),
            "redirect_uris": list(self.record.redirect_uris),
        }

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        # OIDC Core §3.1.2.1: redirect_uri is REQUIRED, so there is no default to use.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scopes this client may have, in request order; None without openid.

        Unknown or unallowed values are dropped, not refused (OIDC Core §5.4 says to
        ignore scope values that are not understood). The broker is an OpenID Provider
        only, so a request without `openid` is refused with invalid_scope.
        """
        requested = scope_values(scope or "")
        if "openid" not in requested:
            return None
        return " ".join(value for value in requested if value in self.record.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison (OAuth 2.0 Security BCP, RFC 9700 §4.1.3), but for
        # the port of a public native client's loopback IP redirect (RFC 8252 §7.3):
        # the app listens on whichever port it could get. Never for a host name
        # (`localhost` may resolve elsewhere, RFC 8252 §8.3) or a confidential client.
        if redirect_uri in self.record.redirect_uris:
            return True
        if self.record.confidential:
            return False
        requested = _loopback_without_port(redirect_uri)
        return requested is not None and any(
            _loopback_without_port(registered) == requested
            for registered in self.record.redirect_uris
        )

    def check_client_secret(self, client_secret: str) -> bool:
        return self.record.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return self.record.allows_auth_method(method)

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.record.grant_types


# http://127.0.0.1 or http://[::1], with a port from 1 to 65535 (no leading zero) or none.
_LOOPBACK_AUTHORITY = re.compile(r"(127\.0\.0\.1|\[::1\])(?::([1-9][0-9]{0,4}))?")


def _loopback_without_port(uri: str) -> tuple[str, str] | None:
    """(IP literal, everything after the authority) of an http loopback IP URI, the
    port left out; None for any other URI (or one with userinfo or a bad port)."""
    if not uri.startswith("http://"):
        return None
    authority, slash, rest = uri[len("http://") :].partition("/")
    match = _LOOPBACK_AUTHORITY.fullmatch(authority)
    if match is None or int(match.group(2) or 0) > 65535:
        return None
    return match.group(1), slash + rest


class StoredCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """An authorization code found valid; it is used up (redeemed) in the transaction
    that issues its tokens, or burned when the exchange fails."""

    def __init__(self, code_id: int, grant: CodeGrant, *, raw: str) -> None:
        self.code_id = code_id
        self.grant = grant
        self.raw = raw
        # Read by authlib's CodeChallenge extension.
        self.code_challenge = grant.code_challenge
        self.code_challenge_method = grant.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.grant.redirect_uri

    def get_scope(self) -> str:
        return self.grant.scope

    def get_nonce(self) -> str | None:
        return self.grant.nonce

    def get_auth_time(self) -> int:
        return int(self.grant.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.grant.acr

    def get_amr(self) -> list[str]:
        return list(self.grant.amr)

    def user(self) -> SignedInUser:
        """The user this code was issued for (as far as the token endpoint needs)."""
        email = self.grant.claims.get("email")
        return SignedInUser(
            sub=self.grant.sub,
            sid=self.grant.sid,
            account_mail=email if isinstance(email, str) else "",
            acr=self.grant.acr,
            amr=tuple(self.grant.amr),
            auth_time=self.grant.auth_time,
            claims=self.grant.claims,
        )


@dataclass(frozen=True, kw_only=True)
class TokenView(TokenMixin):  # type: ignore[misc]
    """A token found in the store, for the refresh grant, revocation and userinfo.

    `raw` is the presented value (kept so the store can act on it: it is stored only
    hashed); the lookups that build a TokenView already excluded dead tokens where the
    endpoint needs live ones.
    """

    raw: str = field(repr=False)
    client: OAuthClient | None
    client_id: str
    sub: str
    scope: str
    sid: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_in: int = 0

    def check_client(self, client: OAuthClient) -> bool:
        return hmac.compare_digest(self.client_id, client.get_client_id())

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> dict[str, Any]:
        return {"sub": self.sub, "claims": dict(self.claims)}

    def get_client(self) -> OAuthClient | None:
        return self.client
