"""The broker's OpenID Provider (authlib): discovery, JWKS, authorization, token,
userinfo, revocation, RP-initiated and back-channel logout.

`create_app` registers `blueprint` and calls `init_app(app)`; everything else is built
on first use from the app's services (`provider.current_provider()`).
"""

from __future__ import annotations

from flask import Flask

from careid_broker.oidc.provider import EXTENSION_KEY, OidcProvider, current_provider, provider_for
from careid_broker.oidc.views import blueprint


def init_app(app: Flask) -> None:
    """Nothing to do eagerly: the provider needs the store, which may not be up yet."""
    app.extensions.setdefault(EXTENSION_KEY, None)


__all__ = ["OidcProvider", "blueprint", "current_provider", "init_app", "provider_for"]
