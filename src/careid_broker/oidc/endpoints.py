"""The token-holding endpoints on authlib: RFC 7009 revocation and OIDC userinfo."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oidc.core import UserInfoEndpoint
from flask import request as flask_request

from careid_broker.oidc.claims import claims_for_scope
from careid_broker.oidc.context import CLIENT_AUTH_METHODS, ServerContext
from careid_broker.oidc.models import OAuthClient, TokenView


class StoreRevocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 revocation through `repos.tokens` (a refresh token takes its family)."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def __init__(self, context: ServerContext) -> None:
        super().__init__()
        self._ctx = context

    def check_params(self, request: OAuth2Request, client: OAuthClient) -> None:
        # RFC 7009 §2.2: the hint only helps the lookup, which here finds both kinds
        # anyway, so an unknown hint is ignored (authlib refuses it, leaving the
        # token alive). unsupported_token_type is for a kind we cannot revoke: none.
        if not request.form.get("token"):
            raise InvalidRequestError("Send the token to revoke as the 'token' parameter.")

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenView | None:
        found = self._ctx.repos.tokens.find(token_string)
        if found is None:
            return None  # RFC 7009 §2.2: an unknown token is answered 200 all the same
        return TokenView(
            raw=token_string,
            client=None,
            client_id=found.client_id,
            sub=found.sub,
            scope=found.scope,
            sid=found.sid,
        )

    def revoke_token(self, token: TokenView, request: OAuth2Request) -> None:
        result = self._ctx.repos.tokens.revoke_token(token.raw, client_id=token.client_id)
        self._ctx.on_token_event(
            "revocation", token.client_id, None, {"tokens_revoked": result.tokens_revoked}
        )


class StoreBearerValidator(BearerTokenValidator):  # type: ignore[misc]
    """Access tokens for userinfo: live ones only (not expired, not revoked)."""

    def __init__(self, context: ServerContext) -> None:
        super().__init__()
        self._ctx = context

    def authenticate_token(self, token_string: str) -> TokenView | None:
        info = self._ctx.repos.tokens.lookup_access_token(token_string)
        if info is None:
            return None
        record = self._ctx.clients.get(info.client_id)
        return TokenView(
            raw=token_string,
            client=OAuthClient(record) if record else None,
            client_id=info.client_id,
            sub=info.sub,
            scope=info.scope,
            sid=info.sid,
            claims=info.claims,
        )


class BearerChallenge(OAuth2Error):  # type: ignore[misc]
    """A userinfo refusal with its RFC 6750 §3 `WWW-Authenticate: Bearer` challenge.

    Without `error`: the request carried no bearer credentials at all, and §3.1 says
    such an answer names no error code; the description still says what to send.
    """

    def __init__(self, description: str, *, error: str | None = None, status: int = 401) -> None:
        super().__init__(description=description, status_code=status, error=error)

    def get_body(self) -> list[tuple[str, Any]]:
        body: list[tuple[str, Any]] = super().get_body()
        return [(name, value) for name, value in body if value is not None]

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        challenge = "Bearer"
        if self.error:
            description = self.get_error_description().replace('"', "'")
            challenge += f' error="{self.error}", error_description="{description}"'
        return [*headers, ("WWW-Authenticate", challenge)]


def _malformed(description: str) -> BearerChallenge:
    return BearerChallenge(description, error="invalid_request", status=400)


class BearerFromHeaderOrBody(ResourceProtector):  # type: ignore[misc]
    """RFC 6750 §2.1 header, or §2.2 form body (OIDC Core §5.3.1 allows both): one of
    them, never both, and never the URL query (§2.3), where a token would be logged."""

    def parse_request_authorization(self, request: Any) -> tuple[Any, str]:
        header = request.headers.get("Authorization")
        in_body = (
            flask_request.method == "POST"
            and flask_request.mimetype == "application/x-www-form-urlencoded"
            and "access_token" in flask_request.form
        )
        if "access_token" in flask_request.args:
            raise _malformed(
                "Send the access token in the Authorization header (or a POST form body),"
                " never in the URL."
            )
        if header and in_body:
            raise _malformed(
                "Send the access token once: in the Authorization header or in the form"
                " body, not both (RFC 6750 section 2)."
            )
        if in_body:
            token = flask_request.form.get("access_token", "")
        else:
            scheme, _, token = (header or "").strip().partition(" ")
            if scheme.lower() != "bearer":
                raise BearerChallenge(
                    "An access token is needed: send it as 'Authorization: Bearer <token>'."
                )
        token = token.strip()
        if not token:
            raise _malformed("The access token is empty.")
        return self.get_token_validator("bearer"), token


class StoreUserInfo(UserInfoEndpoint):  # type: ignore[misc]
    """OIDC Core §5.3: the claims the token's scopes release, as of sign-in."""

    def __init__(self, context: ServerContext, protector: ResourceProtector) -> None:
        super().__init__(resource_protector=protector)
        self._ctx = context

    def get_issuer(self) -> str:
        return self._ctx.issuer

    def generate_user_info(self, user: dict[str, Any], scope: str) -> dict[str, Any]:
        return {"sub": user["sub"], **claims_for_scope(user.get("claims", {}), scope)}
