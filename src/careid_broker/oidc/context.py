"""What the OP's grants and endpoints share: the client auth methods and their context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from careid_broker.oidc.clients import AuthMethod, ClientRegistry
from careid_broker.oidc.keys import TokenSigner
from careid_broker.store import Repositories

# Every method the token, revocation and userinfo endpoints accept; each client is
# limited to its own by `OAuthClient.check_endpoint_auth_method`. "none" (a public
# client) is tried last so a confidential client's id alone never matches first.
CLIENT_AUTH_METHODS = [
    AuthMethod.CLIENT_SECRET_BASIC.value,
    AuthMethod.CLIENT_SECRET_POST.value,
    AuthMethod.CLIENT_SECRET_JWT.value,
    AuthMethod.PRIVATE_KEY_JWT.value,
    AuthMethod.NONE.value,
]

# Hook for the token endpoint's outcome (metrics, audit): (grant_type, client_id,
# error or None, details).
TokenEvent = Callable[[str, str | None, str | None, dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class ServerContext:
    """What the grants and endpoints need, passed in rather than looked up."""

    issuer: str
    clients: ClientRegistry
    repos: Repositories
    signer: TokenSigner
    clock: Callable[[], datetime]
    id_token_lifetime_seconds: int
    access_token_lifetime_seconds: int
    on_token_event: TokenEvent
    # Why a refresh token of sign-in session `sid` may not be used now (None: it may).
    refresh_refusal: Callable[[str | None], str | None]
