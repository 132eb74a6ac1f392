"""authlib's AuthorizationServer, wired to the store's repositories.

The grants and endpoints are authlib's own (RFC 6749 code and refresh grants, RFC 7636
PKCE, OpenID Connect `OpenIDCode`, RFC 7009 revocation, OIDC userinfo, RFC 9207 `iss`);
what is ours is storage — each storage hook calls one repository — and policy: S256
only, PKCE required unless a confidential client opts out, codes consumed atomically,
refresh tokens rotated with reuse detection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.grants.util import is_openid_scope
from flask import g
from flask import request as flask_request

from careid_broker.oidc.claims import authentication_claims, claims_for_scope
from careid_broker.oidc.client_auth import (
    ClientKeyResolver,
    ClientSecretJwt,
    PrivateKeyJwt,
    client_secret_basic,
)
from careid_broker.oidc.clients import AuthMethod
from careid_broker.oidc.context import CLIENT_AUTH_METHODS, ServerContext
from careid_broker.oidc.endpoints import (
    BearerFromHeaderOrBody,
    StoreBearerValidator,
    StoreRevocation,
    StoreUserInfo,
)
from careid_broker.oidc.models import OAuthClient, SignedInUser, StoredCode, TokenView
from careid_broker.oidc.request_checks import malformed_client_request, refusing_unworded
from careid_broker.store import (
    CodeGrant,
    KeyAlgorithm,
    RedeemOutcome,
    RotateOutcome,
    TokenKind,
    new_opaque_token,
)

log = logging.getLogger(__name__)


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only, required unless a confidential client opted out."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    # RFC 7636 §4.3: no method means "plain", which is refused.
    DEFAULT_CODE_CHALLENGE_METHOD = "plain"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        payload = grant.request.payload.data
        client: OAuthClient = grant.request.client
        challenge = payload.get("code_challenge")
        if not challenge:
            if payload.get("code_challenge_method"):
                raise InvalidRequestError("Missing 'code_challenge'.")
            if client.record.require_pkce:
                raise InvalidRequestError("PKCE is required: send code_challenge with S256.")
            return
        if not payload.get("code_challenge_method"):
            raise InvalidRequestError("code_challenge_method must be S256 (plain is refused).")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        code: StoredCode = grant.request.authorization_code
        client: OAuthClient = grant.request.client
        if client.record.require_pkce and not code.code_challenge:
            raise InvalidGrantError("This code was issued without PKCE.")
        super().validate_code_verifier(grant, result)


class CareIdOpenIDCode(OpenIDCode):  # type: ignore[misc]
    """ID tokens: our keys (kid per algorithm), our claims, `auth_time` from the sign-in."""

    def __init__(self, context: ServerContext) -> None:
        super().__init__(require_nonce=False)
        self._ctx = context

    def __call__(self, grant: Any) -> None:
        super().__call__(grant)
        grant.register_hook("before_create_token_response", self._choose_signing_key)

    def _choose_signing_key(self, grant: Any) -> None:
        # The store is asked which key is current on every token (so a key retired by
        # another instance never signs here), in the read-only unit of work that has
        # just looked the code up, rather than in one of its own after the tokens are
        # written. A key that cannot be loaded refuses the request before the code is
        # used up.
        code: StoredCode = grant.request.authorization_code
        if is_openid_scope(code.get_scope()):
            self._signing_key(grant.request.client)

    def _signing_key(self, client: OAuthClient) -> tuple[KeyAlgorithm, str, Any]:
        """The (alg, kid, key) this request's ID token is signed with, chosen once per
        request, so the header's kid and the key are one pair."""
        chosen: tuple[KeyAlgorithm, str, Any] | None = g.get("careid_id_token_key")
        if chosen is None:
            alg = KeyAlgorithm(client.record.id_token_alg.value)
            chosen = (alg, *self._ctx.signer.current(alg))
            g.careid_id_token_key = chosen
        return chosen

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        # The nonce binds the ID token to the RP's browser session; replaying a code
        # is already impossible (single use), so nonces need no server-side memory.
        return False

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return client.record.id_token_alg.value

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        alg, kid, _ = self._signing_key(client)
        return {"alg": alg.value, "kid": kid, "typ": "JWT"}

    def resolve_client_private_key(self, client: OAuthClient) -> Any:
        _, _, key = self._signing_key(client)
        return key

    def get_client_claims(self, client: OAuthClient) -> dict[str, Any]:
        now = int(self._ctx.clock().timestamp())
        return {
            "iss": self._ctx.issuer,
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + self._ctx.id_token_lifetime_seconds,
        }

    def get_authorization_code_claims(self, authorization_code: StoredCode) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        grant = authorization_code.grant
        claims.update(
            authentication_claims(
                acr=grant.acr, amr=grant.amr, auth_time=grant.auth_time, sid=grant.sid
            )
        )
        return claims

    def generate_user_info(self, user: SignedInUser, scope: str) -> dict[str, Any]:
        return {"sub": user.sub, **claims_for_scope(user.claims, scope)}


class CodeGrantWithStore(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """The code grant; codes live in `repos.codes` (hashed, single use)."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    ctx: ServerContext  # set on the subclass made by `build_server`

    def generate_authorization_code(self) -> str:
        # The store mints the code itself (only its hash is kept), so this is where
        # the code is created and saved; `save_authorization_code` has nothing to add.
        user: SignedInUser = self.request.user
        data = self.request.payload.data
        issued = self.ctx.repos.codes.issue(
            CodeGrant(
                client_id=self.request.client.get_client_id(),
                redirect_uri=self.request.payload.redirect_uri,
                scope=self.request.scope,
                sid=user.sid,
                sub=user.sub,
                auth_time=user.auth_time,
                acr=user.acr,
                amr=user.amr,
                nonce=data.get("nonce") or None,
                code_challenge=data.get("code_challenge") or None,
                code_challenge_method=data.get("code_challenge_method") or None,
                claims=dict(user.claims),
            )
        )
        return issued.code

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        return None

    def validate_token_request(self) -> None:
        # A code that was found but whose exchange then fails (redirect URI, PKCE) is
        # burned, so a stolen code gets one try.
        self._found: tuple[StoredCode, OAuthClient] | None = None
        try:
            super().validate_token_request()
        except OAuth2Error:
            if self._found is not None:
                found, client = self._found
                burn(self.ctx, found.raw, client)
            raise

    def query_authorization_code(self, code: str, client: OAuthClient) -> StoredCode | None:
        # Read only: the code is used up in `save_token`'s transaction with the tokens.
        found = self.ctx.repos.codes.peek(code, client_id=client.get_client_id())
        if found.outcome is RedeemOutcome.UNKNOWN:
            return None
        if found.outcome is not RedeemOutcome.OK or found.grant is None:
            burn(self.ctx, code, client)  # reused: revokes its tokens; else burned
            return None
        # A session that ended within the code's minute is caught in `save_token`,
        # atomically with issuing the tokens.
        assert found.code_id is not None  # noqa: S101 - set with OK
        stored = StoredCode(found.code_id, found.grant, raw=code)
        self._found = (stored, client)
        return stored

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        return None  # consumed atomically when it was queried

    def authenticate_user(self, authorization_code: StoredCode) -> SignedInUser:
        return authorization_code.user()


def burn(ctx: ServerContext, code: str, client: OAuthClient) -> RedeemOutcome:
    """Use a code up without issuing anything; a reused code's tokens are revoked."""
    result = ctx.repos.codes.redeem(code, client_id=client.get_client_id())
    if result.outcome is RedeemOutcome.REUSED:
        log.warning(
            "authorization code replayed by %s: %d tokens revoked",
            client.get_client_id(),
            result.tokens_revoked,
        )
        ctx.on_token_event(
            "authorization_code",
            client.get_client_id(),
            "code_reused",
            {"tokens_revoked": result.tokens_revoked},
        )
    return result.outcome


class RefreshGrantWithStore(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation: the old token works once; a replay revokes its family."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    ctx: ServerContext

    def authenticate_refresh_token(self, refresh_token: str) -> TokenView | None:
        # Found even when already rotated or revoked: the rotation in `save_token`
        # must see a replay to revoke the family.
        found = self.ctx.repos.tokens.find(refresh_token)
        if found is None or found.kind is not TokenKind.REFRESH:
            return None
        client: OAuthClient = self.request.client
        if found.client_id != client.get_client_id():
            # Another client holding this client's refresh token means it leaked: the
            # store's rotation refuses it and revokes the whole grant (nothing issued).
            result = self.ctx.repos.tokens.rotate_refresh_token(
                refresh_token,
                client_id=client.get_client_id(),
                new_access_token=new_opaque_token(),
                new_refresh_token=new_opaque_token(),
            )
            self.ctx.on_token_event(
                "refresh_token",
                client.get_client_id(),
                f"refresh_{result.outcome.value}",
                {"tokens_revoked": result.tokens_revoked},
            )
            return None
        refusal = self.ctx.refresh_refusal(found.sid)
        if refusal is not None:
            # invalid_grant: the RP sends the person to sign in again.
            self.ctx.on_token_event(
                "refresh_token", client.get_client_id(), "refresh_session_ended", {"why": refusal}
            )
            return None
        return TokenView(
            raw=refresh_token,
            client=None,
            client_id=found.client_id,
            sub=found.sub,
            scope=found.scope,
            sid=found.sid,
        )

    def authenticate_user(self, refresh_token: TokenView) -> dict[str, str]:
        return {"sub": refresh_token.sub}

    def revoke_old_credential(self, refresh_token: TokenView) -> None:
        return None  # rotated atomically in save_token


class IssuerInResponse(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: `iss` on every authorization response."""

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


class BrokerAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's Flask AuthorizationServer with storage from the broker's store."""

    def __init__(self, context: ServerContext) -> None:
        super().__init__()
        self.ctx = context
        self.issuer_parameter = IssuerInResponse(context.issuer)

    def query_client(self, client_id: str) -> OAuthClient | None:
        record = self.ctx.clients.get(client_id) if isinstance(client_id, str) else None
        return OAuthClient(record) if record is not None else None

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        # A login transaction resumed after sign-in carries its own stored request.
        if isinstance(request, OAuth2Request):
            return request
        # authlib's own wraps Flask's `request` proxy, and its payload reads the form
        # through it a score of times per request: give it the request itself.
        return FlaskOAuth2Request(flask_request._get_current_object())  # type: ignore[attr-defined]

    def create_token_response(self, request: Any = None) -> Any:
        oauth_request = self.create_oauth2_request(request)
        problem = malformed_client_request(token_endpoint=True)
        if problem is not None:
            # Refused before any grant looks at it, so no code is spent on it.
            return self.handle_error_response(oauth_request, InvalidRequestError(problem))
        return super().create_token_response(oauth_request)

    def create_endpoint_response(self, name: str, request: Any = None) -> Any:
        if name == StoreRevocation.ENDPOINT_NAME:
            problem = malformed_client_request(token_endpoint=False)
            if problem is not None:
                oauth_request = self.create_oauth2_request(request)
                return self.handle_error_response(oauth_request, InvalidRequestError(problem))
        return super().create_endpoint_response(name, request)

    def authenticate_client(
        self, request: OAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> OAuthClient:
        # At /token and /revoke alike: credentials authlib cannot word a refusal of
        # (a client assertion whose alg or kid holds a quote, a backslash or a
        # non-ASCII letter) are refused as any other unusable credentials are.
        with refusing_unworded(_unreadable_credentials):
            client: OAuthClient = super().authenticate_client(request, methods, endpoint)
        return client

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client: OAuthClient = request.client
        client_id = client.get_client_id()
        if request.payload.grant_type == "refresh_token":
            old: TokenView = request.refresh_token
            result = self.ctx.repos.tokens.rotate_refresh_token(
                old.raw,
                client_id=client_id,
                new_access_token=token["access_token"],
                new_refresh_token=token["refresh_token"],
                scope=token.get("scope"),
            )
            if result.outcome is not RotateOutcome.OK:
                self.ctx.on_token_event(
                    "refresh_token",
                    client_id,
                    f"refresh_{result.outcome.value}",
                    {"tokens_revoked": result.tokens_revoked},
                )
                raise InvalidGrantError("The refresh token is not valid.")
            return
        user: SignedInUser = request.user
        code: StoredCode = request.authorization_code
        repos = self.ctx.repos
        # One transaction: the code is used up, the RP joins the session (to be told by
        # back-channel logout when it ends) and gets its tokens — or, if the code was
        # used meanwhile or the session ended, nothing is issued.
        with repos.store.transaction():
            redeemed = repos.codes.redeem(code.raw, client_id=client_id)
            if redeemed.outcome is RedeemOutcome.OK:
                if not repos.sessions.add_relying_party(user.sid, client_id):
                    raise InvalidGrantError("The sign-in session has ended.")
                repos.tokens.issue(
                    client_id=client_id,
                    sub=user.sub,
                    scope=token.get("scope", code.get_scope()),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    sid=user.sid,
                    code_id=code.code_id,
                )
        # Not OK: used by a concurrent exchange (or replayed) since it was read. That is
        # committed as it is (a reused code's tokens are revoked), and nothing issued.
        if redeemed.outcome is not RedeemOutcome.OK:
            if redeemed.outcome is RedeemOutcome.REUSED:
                log.warning(
                    "authorization code raced or replayed by %s: %d tokens revoked",
                    client_id,
                    redeemed.tokens_revoked,
                )
                self.ctx.on_token_event(
                    "authorization_code",
                    client_id,
                    "code_reused",
                    {"tokens_revoked": redeemed.tokens_revoked},
                )
            raise InvalidGrantError("The authorization code is not valid.")


def _unreadable_credentials() -> InvalidClientError:
    return InvalidClientError(
        status_code=401,
        description="The client's credentials could not be read: a value in them (such as"
        " the client assertion's alg or kid) holds characters it may not.",
    )


def build_server(
    context: ServerContext, *, jti_clock: Callable[[], datetime]
) -> BrokerAuthorizationServer:
    """The wired AuthorizationServer: grants, extensions, endpoints, client auth."""
    server = BrokerAuthorizationServer(context)
    code_grant = type("CodeGrant", (CodeGrantWithStore,), {"ctx": context})
    refresh_grant = type("RefreshGrant", (RefreshGrantWithStore,), {"ctx": context})
    server.register_grant(code_grant, [S256Challenge(required=True), CareIdOpenIDCode(context)])
    server.register_grant(refresh_grant)
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=lambda **_: new_opaque_token(),
            refresh_token_generator=lambda **_: new_opaque_token(),
            expires_generator=lambda client, grant_type: context.access_token_lifetime_seconds,
        ),
    )
    server.register_extension(server.issuer_parameter)
    audiences = [context.issuer, f"{context.issuer}/token"]
    resolver = ClientKeyResolver()
    server.register_client_auth_method(AuthMethod.CLIENT_SECRET_BASIC.value, client_secret_basic)
    server.register_client_auth_method(
        AuthMethod.PRIVATE_KEY_JWT.value,
        PrivateKeyJwt(
            audiences=audiences,
            resolver=resolver,
            jtis=context.repos.jtis,
            clock=jti_clock,
        ),
    )
    server.register_client_auth_method(
        AuthMethod.CLIENT_SECRET_JWT.value,
        ClientSecretJwt(
            audiences=audiences,
            resolver=resolver,
            jtis=context.repos.jtis,
            clock=jti_clock,
        ),
    )
    server.register_endpoint(StoreRevocation(context))
    protector = BearerFromHeaderOrBody()
    protector.register_token_validator(StoreBearerValidator(context))
    server.register_endpoint(StoreUserInfo(context, protector))
    return server
