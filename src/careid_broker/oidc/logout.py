"""OpenID Connect RP-Initiated Logout 1.0 on authlib's `EndSessionEndpoint`.

With a valid `id_token_hint` the browser's session is ended at once (when it is that
user's) and the browser goes to the client's registered `post_logout_redirect_uri`.
Without one the user is asked first — a bare link must not be able to sign people out
— and is never redirected: nothing vouches for where the request came from
(RP-Initiated Logout §3, §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import KeySet

from careid_broker.oidc.keys import TokenSigner
from careid_broker.store import EndReason, KeyAlgorithm
from careid_broker.web.signin_session import current_signin, end_signin

# Ends the browser's session if it belongs to the hinted user (None: no hint).
EndCurrentSession = Callable[[str | None], None]


class BrokerEndSession(EndSessionEndpoint):  # type: ignore[misc]
    """authlib's end_session endpoint with our keys and our session ending."""

    def __init__(self, *, issuer: str, signer: TokenSigner, end: EndCurrentSession) -> None:
        super().__init__()
        self._issuer = issuer
        self._signer = signer
        self._end = end

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
        claims = end_session_request.id_token_claims
        hinted_sub = str(claims["sub"]) if claims and "sub" in claims else None
        self._end(hinted_sub)


def end_browser_session(hinted_sub: str | None) -> None:
    """End the current browser's sign-in if it is the hinted user's (or any, unhinted).

    An ID token for someone else (an old hint after another person signed in on this
    browser) must not sign the current person out.
    """
    current = current_signin()
    if current is None:
        return
    if hinted_sub is not None and hinted_sub != current.sub:
        return
    end_signin(EndReason.LOGOUT)
