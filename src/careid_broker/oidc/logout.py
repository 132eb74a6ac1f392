"""OpenID Connect RP-Initiated Logout 1.0 on authlib's `EndSessionEndpoint`.

With a valid `id_token_hint` the browser's session is ended at once (when it is that
user's: the view does it, since it owns the cookie, with `hinted_sub`) and the browser
goes to the client's registered `post_logout_redirect_uri`.
Without one the user is asked first — a bare link must not be able to sign people out
— and is never redirected: nothing vouches for where the request came from
(RP-Initiated Logout §3, §6).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import KeySet

from careid_broker.oidc.keys import TokenSigner
from careid_broker.store import KeyAlgorithm


class BrokerEndSession(EndSessionEndpoint):  # type: ignore[misc]
    """authlib's end_session endpoint with our keys; it decides, the view ends the session."""

    def __init__(self, *, issuer: str, signer: TokenSigner) -> None:
        super().__init__()
        self._issuer = issuer
        self._signer = signer

    def get_server_jwks(self) -> KeySet:
        return self._signer.verification_keys()

    def get_algorithms(self) -> list[str]:
        return [alg.value for alg in KeyAlgorithm]

    def validate_request(self, request: OAuth2Request) -> EndSessionRequest:
        validated: EndSessionRequest = super().validate_request(request)
        claims: dict[str, Any] | None = validated.id_token_claims
        # Signed by one of our keys is not quite enough: it must be an ID token we issued.
        if claims is not None and claims.get("iss") != self._issuer:
            raise InvalidRequestError("id_token_hint was not issued by this provider.")
        return validated

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        """Nothing here: the view has already ended the browser's session (`hinted_sub`)."""


def hinted_sub(end_session_request: EndSessionRequest) -> str | None:
    """The `sub` of a validated request's id_token_hint (None: no hint)."""
    claims = end_session_request.id_token_claims
    return str(claims["sub"]) if claims and "sub" in claims else None
