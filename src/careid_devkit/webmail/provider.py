"""The webmail's side of OpenID Connect, on authlib's Flask client.

authlib does the protocol work (discovery, PKCE S256, nonce, the code exchange, the ID
token's signature and claims); this module adds what an RP must still check itself —
the discovered issuer, RFC 9207's `iss` on the callback, an ID token being present at
all, `aud` being this client, the userinfo `sub` matching (OIDC Core §5.3.2) — and turns
every failure into a typed error.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, request, session
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.wrappers import Response

from careid_devkit.webmail.config import WebmailConfig
from careid_devkit.webmail.errors import ProviderUnavailableError, SignInError

log = logging.getLogger(__name__)

CLIENT_NAME = "careid"
PENDING_KEY = "webmail_pending_signins"
MAX_PENDING_SIGNINS = 5
# A burst of logout tokens with unknown key ids must not turn into a burst of JWKS
# fetches from the OP.
JWKS_REFRESH_INTERVAL_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class SignInResult:
    """A finished sign-in: the ID token's claims merged with userinfo, and the token."""

    claims: Mapping[str, Any]
    id_token: str = field(repr=False)
    requested_acr: str | None


class Provider:
    """The OpenID Provider as this client sees it (also the logout token `KeySource`)."""

    def __init__(
        self,
        app: Flask,
        config: WebmailConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._monotonic = monotonic
        self._oauth = OAuth(app)
        self._client: Any = self._oauth.register(
            name=CLIENT_NAME,
            client_id=config.client_id,
            client_secret=config.client_secret,
            server_metadata_url=config.discovery_url,
            client_kwargs={
                "scope": " ".join(config.scopes),
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": "client_secret_basic",
                "default_timeout": config.http_timeout_seconds,
            },
        )
        self._refresh_lock = threading.Lock()
        self._last_refresh = float("-inf")

    # -- metadata and keys ---------------------------------------------------------

    def metadata(self) -> Mapping[str, Any]:
        """The OP's discovery document (fetched once), its issuer checked."""
        try:
            metadata: Mapping[str, Any] = self._client.load_server_metadata()
        except (OSError, ValueError) as exc:
            raise ProviderUnavailableError(
                f"discovery at {self._config.discovery_url} failed: {type(exc).__name__}"
            ) from exc
        if metadata.get("issuer") != self._config.issuer:
            # OIDC Discovery §4.3: the issuer must be exactly the one we asked.
            raise ProviderUnavailableError(
                f"discovery names issuer {metadata.get('issuer')!r}, not {self._config.issuer!r}"
            )
        return metadata

    def key_set(self, *, refresh: bool = False) -> KeySet:
        """The OP's JWKS; a refresh happens at most once per interval."""
        self.metadata()
        if refresh:
            with self._refresh_lock:
                now = self._monotonic()
                if now - self._last_refresh < JWKS_REFRESH_INTERVAL_SECONDS:
                    refresh = False
                else:
                    self._last_refresh = now
        try:
            jwks = self._client.fetch_jwk_set(force=refresh)
            return KeySet.import_key_set(jwks)
        except (OSError, ValueError, JoseError) as exc:
            raise ProviderUnavailableError(
                f"the OP's JWKS could not be loaded: {type(exc).__name__}"
            ) from exc

    def signing_algorithms(self) -> Collection[str]:
        """The ID token algorithms the OP advertises (RS256 if it says nothing)."""
        algs = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        return [str(a) for a in algs]

    # -- sign-in -------------------------------------------------------------------

    def start_sign_in(self, *, acr_values: str | None) -> Response:
        """Redirect to the authorization endpoint (state, nonce and PKCE kept server-side)."""
        self.metadata()
        # Our own state value, so the acr asked for can be remembered per sign-in: two
        # tabs may sign in at once, one with the card and one without.
        state = secrets.token_urlsafe(24)
        pending: dict[str, str] = dict(session.get(PENDING_KEY) or {})
        pending[state] = acr_values or ""
        kept = dict(list(pending.items())[-MAX_PENDING_SIGNINS:])
        for dropped in pending.keys() - kept.keys():
            # authlib keeps each sign-in's state under this key until it expires an
            # hour later; dropping the oldest bounds what one browser can pile up.
            session.pop(f"_state_{CLIENT_NAME}_{dropped}", None)
        session[PENDING_KEY] = kept
        extra = {"acr_values": acr_values} if acr_values else {}
        try:
            response: Response = self._client.authorize_redirect(
                self._config.redirect_uri, state=state, **extra
            )
        except (OSError, RuntimeError) as exc:
            raise ProviderUnavailableError(f"authorization redirect failed: {exc}") from exc
        return response

    def finish_sign_in(self) -> SignInResult:
        """Handle the callback: check it, exchange the code, validate, fetch userinfo."""
        metadata = self.metadata()
        pending: dict[str, str] = dict(session.get(PENDING_KEY) or {})
        requested_acr = pending.pop(request.args.get("state", ""), None)
        session[PENDING_KEY] = pending
        error = request.args.get("error")
        if error:
            raise SignInError(f"the OP answered error={error!r}")
        iss = request.args.get("iss")
        if iss is None and metadata.get("authorization_response_iss_parameter_supported"):
            raise SignInError("the callback has no iss although the OP promises one (RFC 9207)")
        if iss is not None and iss != self._config.issuer:
            raise SignInError(f"the callback names issuer {iss!r} (RFC 9207 mix-up defence)")
        claims_options = {
            "iss": {"essential": True, "value": self._config.issuer},
            "aud": {"essential": True, "value": self._config.client_id},
            "sub": {"essential": True},
            "nonce": {"essential": True},
        }
        try:
            token: dict[str, Any] = self._client.authorize_access_token(
                claims_options=claims_options,
                leeway=int(self._config.clock_skew.total_seconds()),
            )
        except OAuthError as exc:
            # Carries the OAuth error code (invalid_grant, mismatching_state…), never a token.
            raise SignInError(f"the code exchange failed: {exc.error}") from exc
        except JoseError as exc:
            raise SignInError(f"the ID token did not validate: {exc.error}") from exc
        except (OSError, ValueError) as exc:
            raise ProviderUnavailableError(
                f"the token endpoint failed: {type(exc).__name__}"
            ) from exc
        id_claims = token.get("userinfo")
        id_token = token.get("id_token")
        if not id_claims or not isinstance(id_token, str):
            raise SignInError("the token response has no validated ID token")
        userinfo = self._userinfo(token)
        if userinfo.get("sub") != id_claims.get("sub"):
            raise SignInError("userinfo is about another subject than the ID token")
        return SignInResult(
            claims={**userinfo, **dict(id_claims)},
            id_token=id_token,
            requested_acr=requested_acr or None,
        )

    def _userinfo(self, token: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.metadata().get("userinfo_endpoint"):
            raise SignInError("the OP publishes no userinfo endpoint")
        try:
            info: Mapping[str, Any] = self._client.userinfo(token=dict(token))
        except (OSError, ValueError) as exc:
            raise ProviderUnavailableError(f"userinfo failed: {type(exc).__name__}") from exc
        return info

    # -- sign-out ------------------------------------------------------------------

    def has_end_session(self) -> bool:
        """Whether the OP supports RP-initiated logout."""
        return bool(self.metadata().get("end_session_endpoint"))

    def logout_redirect(self, *, id_token_hint: str) -> Response:
        """Redirect to the end_session_endpoint (RP-Initiated Logout 1.0 §2)."""
        try:
            response: Response = self._client.logout_redirect(
                post_logout_redirect_uri=self._config.post_logout_redirect_uri,
                id_token_hint=id_token_hint,
                client_id=self._config.client_id,
            )
        except RuntimeError as exc:
            raise ProviderUnavailableError(f"RP-initiated logout failed: {exc}") from exc
        return response

    def logout_returned(self) -> bool:
        """Whether this request is the OP's redirect back after our logout (state matches)."""
        if "state" not in request.args:
            return False
        try:
            self._client.validate_logout_response()
        except OAuthError:
            return False
        return True
