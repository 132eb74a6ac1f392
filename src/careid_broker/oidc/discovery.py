"""OpenID Provider metadata (OpenID Connect Discovery 1.0 §3, RFC 8414, RFC 9207)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from careid_broker.assurance import SUPPORTED_ACR_VALUES
from careid_broker.oidc.claims import CLAIMS_SUPPORTED
from careid_broker.oidc.client_auth import (
    CLIENT_SECRET_JWT_ALGORITHMS,
    PRIVATE_KEY_JWT_ALGORITHMS,
)
from careid_broker.oidc.clients import ALL_AUTH_METHODS, SUPPORTED_SCOPES, AuthMethod, IdTokenAlg

# The paths of the OP's endpoints under the issuer.
PATHS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "userinfo_endpoint": "/userinfo",
    "jwks_uri": "/jwks",
    "revocation_endpoint": "/revoke",
    "end_session_endpoint": "/logout",
}


def provider_metadata(
    issuer: str, *, auth_methods_allowed: Iterable[AuthMethod] = ALL_AUTH_METHODS
) -> dict[str, Any]:
    """The discovery document for an issuer URL (no trailing slash).

    `auth_methods_allowed` is the deployment's `[oidc] token_endpoint_auth_methods`.
    """
    allowed = frozenset(auth_methods_allowed)
    auth_methods = [m.value for m in AuthMethod if m in allowed]
    # The algorithms a client assertion is checked under, of the methods allowed
    # (RFC 8414 §2: present when a JWT method is).
    signing_algs: list[str] = []
    if AuthMethod.PRIVATE_KEY_JWT in allowed:
        signing_algs += PRIVATE_KEY_JWT_ALGORITHMS
    if AuthMethod.CLIENT_SECRET_JWT in allowed:
        signing_algs += CLIENT_SECRET_JWT_ALGORITHMS
    metadata: dict[str, Any] = {
        "issuer": issuer,
        **{name: f"{issuer}{path}" for name, path in PATHS.items()},
        "scopes_supported": list(SUPPORTED_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [a.value for a in IdTokenAlg],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": list(CLAIMS_SUPPORTED),
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "acr_values_supported": list(SUPPORTED_ACR_VALUES),
        # consent: met by the trust's registration of the RP; select_account: a fresh
        # sign-in, as login is (`web/oidc_authorize.py`).
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "display_values_supported": ["page"],
        "ui_locales_supported": ["en-GB"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
    if signing_algs:
        metadata["token_endpoint_auth_signing_alg_values_supported"] = signing_algs
    return metadata
