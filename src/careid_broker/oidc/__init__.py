"""The broker's OpenID Provider (authlib): discovery, JWKS, authorization, token,
userinfo, revocation, RP-initiated and back-channel logout.

`build_provider` wires it once, with the broker; the views are `careid_broker.web.oidc`.
"""

from __future__ import annotations

from careid_broker.oidc.provider import OidcProvider, build_provider

__all__ = ["OidcProvider", "build_provider"]
