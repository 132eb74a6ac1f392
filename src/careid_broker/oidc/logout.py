"""OpenID Connect RP-Initiated Logout 1.0 on authlib's `EndSessionEndpoint`.

With a valid `id_token_hint` the browser's session is ended at once (when it is that
user's: the view does it, since it owns the cookie, with `hinted_sub`) and the browser
goes to the client's registered `post_logout_redirect_uri`. A session its card has
already ended may have left this client a sign-in it kept (`card_removal = "none"`):
the hint's `sid` and `sub` name it, and it ends too, this client's alone (`end_session`).
Without one the user is asked first — a bare link must not be able to sign people out
— and is never redirected: nothing vouches for where the request came from
(RP-Initiated Logout §3, §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import KeySet

from careid_broker.oidc.claims import public_sid
from careid_broker.oidc.keys import TokenSigner
from careid_broker.store import KeyAlgorithm


class EndKeptSignin(Protocol):
    """Ends the sign-in `client_id` kept in the ended session of `sub` that `named`
    picks (`SigninSessions.end_kept_signin`)."""

    def __call__(self, *, sub: str, client_id: str, named: Callable[[str], bool]) -> object: ...


class BrokerEndSession(EndSessionEndpoint):  # type: ignore[misc]
    """authlib's end_session endpoint with our keys; it decides, the view ends the
    browser's session, and `end_session` a sign-in the client kept after the card left."""

    def __init__(self, *, issuer: str, signer: TokenSigner, end_kept_signin: EndKeptSignin) -> None:
        super().__init__()
        self._issuer = issuer
        self._signer = signer
        self._end_kept_signin = end_kept_signin

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
        """End the sign-in the client kept in the hint's session after its card left.

        The view has already ended the browser's session (`hinted_sub`); once the card
        has ended a session, the browser no longer holds it, yet a client with
        `card_removal = "none"` kept its tokens, and this logout is its own sign-out.
        Only an ended session of the hint's `sub`, named by its `sid`, in which this
        client (the hint's audience) still holds tokens: a live session, another
        person's, or another client's sign-in is never ended here.
        """
        claims: dict[str, Any] | None = end_session_request.id_token_claims
        client = end_session_request.client
        if not claims or client is None:
            return
        sub, sid, aud = claims.get("sub"), claims.get("sid"), claims.get("aud")
        if not isinstance(sub, str) or not isinstance(sid, str):
            return
        client_id = client.get_client_id()
        # authlib checked a client_id against aud; one found some other way must match too.
        if client_id not in ([aud] if isinstance(aud, str) else aud or []):
            return
        self._end_kept_signin(
            sub=sub, client_id=client_id, named=lambda stored: public_sid(stored) == sid
        )


def hinted_sub(end_session_request: EndSessionRequest) -> str | None:
    """The `sub` of a validated request's id_token_hint (None: no hint)."""
    claims = end_session_request.id_token_claims
    return str(claims["sub"]) if claims and "sub" in claims else None
