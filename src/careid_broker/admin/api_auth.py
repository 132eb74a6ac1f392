"""OAuth 2.0 for the registrations API: client credentials in, bearer tokens out (authlib).

Why a token endpoint of its own (`/api/v1/token`) rather than a grant on the OpenID
Provider's `/token`: API clients are machines acting for organisations, not relying
parties signing people in. They have no redirect URI, no `openid` scope and no session
to log out of, and their scopes (`registrations:read`, `registrations:write`) must never
be grantable to a relying party. Keeping them apart keeps the OP's client checks strict
and its discovery document free of administrative scopes.

What is shared: authlib's RFC 6749 machinery (`ClientCredentialsGrant`, client
authentication, the bearer `ResourceProtector`), the OP's scrypt client-secret hashes,
and the store's token table (tokens kept only as SHA-256 digests). An API token is
told apart from an RP's token by its subject (`api-client:<id>`) and by having no
sign-in session; userinfo refuses it (no `openid` scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidRequestError,
    MissingAuthorizationError,
    grants,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from flask.wrappers import Response

from careid_broker.admin.config import ApiClient, ApiScope, ApiSettings
from careid_broker.codes import BrokerCode, Code
from careid_broker.oidc.client_auth import client_secret_basic
from careid_broker.store import Tokens, new_opaque_token

REALM = "careid-broker-api"
SUBJECT_PREFIX = "api-client:"
GRANT_TYPE = "client_credentials"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# Far longer than any token we issue (43 characters); refuse before hashing.
MAX_TOKEN_LENGTH = 512


def api_subject(client_id: str) -> str:
    """The `sub` an API client's tokens are stored under."""
    return f"{SUBJECT_PREFIX}{client_id}"


class ApiOAuthClient(ClientMixin):  # type: ignore[misc]
    """A declared API client as authlib's `ClientMixin`."""

    def __init__(self, record: ApiClient) -> None:
        self.record = record
        self.client_id = record.client_id

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        allowed = {s.value for s in self.record.scopes}
        if not scope:
            return " ".join(sorted(allowed))  # RFC 6749 §3.3: a pre-defined default
        wanted = scope_to_list(scope) or []
        # Asking for more than the client may have is refused, not quietly narrowed:
        # the integrator learns of the mistake at once.
        if not set(wanted) <= allowed:
            return None
        return " ".join(sorted(set(wanted)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.record.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT_TYPE


class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4, with both secret-based client authentication methods."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


class ApiAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's server with the `[api]` clients and the store's token table."""

    def __init__(self, settings: ApiSettings, tokens: Tokens) -> None:
        super().__init__()
        self._settings = settings
        self._tokens = tokens
        self.scopes_supported = [s.value for s in ApiScope]
        lifetime = int(settings.token_lifetime.total_seconds())
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: new_opaque_token(),
                expires_generator=lambda client, grant_type: lifetime,
            ),
        )
        self.register_grant(ClientCredentials)
        # The OP's wrapper: Basic credentials that are not UTF-8 are invalid_client.
        self.register_client_auth_method("client_secret_basic", client_secret_basic)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        # `token_response` makes the request itself, to read the client off it after.
        if isinstance(request, OAuth2Request):
            return request
        return super().create_oauth2_request(request)

    def token_response(self) -> tuple[Response, str | None]:
        """The token endpoint's answer, and the id of the client the token was issued to.

        That is the client that authenticated (None when refused), not the id the
        request names: Basic credentials are form-encoded, so `rx1%2Dwriter` is
        `rx1-writer`.
        """
        oauth_request = super().create_oauth2_request(None)
        response: Response = self.create_token_response(oauth_request)
        client = oauth_request.client if response.status_code == 200 else None
        return response, client.get_client_id() if isinstance(client, ApiOAuthClient) else None

    def authenticate_client(
        self, request: OAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> ApiOAuthClient:
        scheme = request.headers.get("Authorization", "").partition(" ")[0]
        if scheme.lower() == "basic" and "client_secret" in request.form:
            # RFC 6749 §2.3: one method per request. Otherwise a wrong Basic secret
            # falls through to the form's, perhaps another client's, unrecorded. (Any
            # other Authorization scheme authenticates no client here.)
            raise InvalidRequestError(
                description="Send the client's credentials one way only: the Authorization"
                " header or client_id and client_secret in the form (RFC 6749 section 2.3)."
            )
        client: ApiOAuthClient = super().authenticate_client(request, methods, endpoint)
        return client

    def query_client(self, client_id: str) -> ApiOAuthClient | None:
        record = self._settings.client(client_id) if isinstance(client_id, str) else None
        return ApiOAuthClient(record) if record is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client: ApiOAuthClient = request.client
        self._tokens.issue(
            client_id=client.get_client_id(),
            sub=api_subject(client.get_client_id()),
            scope=token.get("scope", ""),
            access_token=token["access_token"],
        )


@dataclass(frozen=True, kw_only=True)
class ApiToken:
    """A live API access token, as authlib's resource protector expects it."""

    client: ApiClient
    scopes: frozenset[str]

    def get_scope(self) -> str:
        return " ".join(sorted(self.scopes))

    def is_expired(self) -> bool:
        return False  # the store returns live tokens only

    def is_revoked(self) -> bool:
        return False


class ApiBearerValidator(BearerTokenValidator):  # type: ignore[misc]
    """Bearer tokens issued by `/api/v1/token` to a client still in the configuration."""

    def __init__(self, settings: ApiSettings, tokens: Tokens) -> None:
        super().__init__(realm=REALM)
        self._settings = settings
        self._tokens = tokens

    def authenticate_token(self, token_string: str) -> ApiToken | None:
        if not token_string or len(token_string) > MAX_TOKEN_LENGTH:
            return None
        info = self._tokens.lookup_access_token(token_string)
        if info is None or info.sid is not None or info.sub != api_subject(info.client_id):
            return None  # unknown, expired, revoked, or an RP's token
        client = self._settings.client(info.client_id)
        if client is None:
            return None  # the client was removed from the configuration
        # Scopes taken away in the configuration stop working at once, not at expiry.
        granted = set(scope_to_list(info.scope) or []) & {s.value for s in client.scopes}
        return ApiToken(client=client, scopes=frozenset(granted))


class ApiAuthRefusal(Exception):
    """Why a request's bearer token was not accepted, as the response should say it.

    `client_id` names the token's client when the token was good but lacked the scope.
    """

    def __init__(
        self, *, status: int, code: Code, www_authenticate: str, client_id: str | None = None
    ) -> None:
        super().__init__(code.value)
        self.status = status
        self.code = code
        self.www_authenticate = www_authenticate
        self.client_id = client_id


def _challenge(**attributes: str) -> str:
    # RFC 6750 §3: no error attribute when the request carried no credentials at all.
    parts = [f'realm="{REALM}"', *(f'{key}="{value}"' for key, value in attributes.items())]
    return "Bearer " + ", ".join(parts)


class ApiAuth:
    """The token endpoint's server and the bearer check, for one app."""

    def __init__(self, settings: ApiSettings, tokens: Tokens) -> None:
        self.settings = settings
        self.server = ApiAuthorizationServer(settings, tokens)
        self._protector = ResourceProtector()
        self._protector.register_token_validator(ApiBearerValidator(settings, tokens))

    def authenticate(self, scope: ApiScope) -> ApiToken:
        """The request's token if it is live and carries `scope`; else `ApiAuthRefusal`."""
        try:
            # The scope is checked here, not by authlib, to name the client refused.
            token: ApiToken = self._protector.acquire_token()
        except MissingAuthorizationError:
            raise ApiAuthRefusal(
                status=401, code=BrokerCode.API_TOKEN_MISSING, www_authenticate=_challenge()
            ) from None
        except OAuth2Error:  # invalid_token, or not a Bearer token at all
            raise ApiAuthRefusal(
                status=401,
                code=BrokerCode.API_TOKEN_INVALID,
                www_authenticate=_challenge(error="invalid_token"),
            ) from None
        if scope.value not in token.scopes:
            raise ApiAuthRefusal(
                status=403,
                code=BrokerCode.API_SCOPE_INSUFFICIENT,
                www_authenticate=_challenge(error="insufficient_scope", scope=scope.value),
                client_id=token.client.client_id,
            )
        return token
