"""The demo relying party's settings: which OP, which client, where the webmail lives."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from careid_devkit.codes import DevkitCode
from careid_devkit.webmail.errors import WebmailError

# DEMO MATERIAL: the webmail client's secret as published in config/clients.toml, so the
# demo works out of the box. A real deployment passes its own secret.
DEMO_CLIENT_SECRET = "webmail-demo-secret-change-me"  # noqa: S105 - public demo value
CLIENT_SECRET_ENV = "CAREID_WEBMAIL_CLIENT_SECRET"  # noqa: S105 - a variable name
ISSUER_ENV = "CAREID_WEBMAIL_ISSUER"

DEFAULT_ISSUER = "http://localhost:5000"
DEFAULT_PORT = 5001
# `selectedrole`: a person with several roles chooses the one they work in at sign-in.
DEFAULT_SCOPES = (
    "openid",
    "profile",
    "email",
    "nationalrbacaccess",
    "associatedorgs",
    "selectedrole",
)

# The acr_values the "Sign in with smartcard" link asks for, and the acr it must get back.
ACR_ANY_CARD = "AAL3_ANY"
ACR_CARD = "AAL3_SMARTCARD"
ACR_PASSWORD = "AAL1_USERPASS"  # noqa: S105 - an acr value, not a password


@dataclass(frozen=True, kw_only=True, slots=True)
class WebmailConfig:
    """Everything `create_webmail_app` needs; the secret never appears in a repr."""

    client_secret: str = field(repr=False)
    issuer: str = DEFAULT_ISSUER
    client_id: str = "webmail"
    base_url: str = f"http://localhost:{DEFAULT_PORT}"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    session_idle_timeout: timedelta = timedelta(minutes=30)
    session_absolute_timeout: timedelta = timedelta(hours=10)
    max_sessions: int = 10_000
    # Back-Channel Logout §2.6: how old a logout token's iat may be, and the clock skew
    # allowed for a token from a server whose clock runs ahead.
    logout_token_max_age: timedelta = timedelta(minutes=5)
    clock_skew: timedelta = timedelta(minutes=1)
    # How often the signed-in page asks whether the session was ended elsewhere.
    status_poll_seconds: int = 5
    http_timeout_seconds: float = 10.0
    cookie_name: str = "webmail_sid"

    def __post_init__(self) -> None:
        for name, url in (("issuer", self.issuer), ("base_url", self.base_url)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise WebmailError(
                    DevkitCode.DEVKIT_INVALID_ARGUMENT, f"{name} must be an http(s) URL: {url!r}"
                )
            if url.endswith("/") or parts.query or parts.fragment:
                raise WebmailError(
                    DevkitCode.DEVKIT_INVALID_ARGUMENT,
                    f"{name} must have no trailing slash, query or fragment: {url!r}",
                )
        if not self.client_id or not self.client_secret:
            raise WebmailError(
                DevkitCode.DEVKIT_INVALID_ARGUMENT, "client_id and client_secret must be set"
            )
        if "openid" not in self.scopes:
            raise WebmailError(DevkitCode.DEVKIT_INVALID_ARGUMENT, "scopes must include openid")
        if self.status_poll_seconds < 1 or self.max_sessions < 1:
            raise WebmailError(
                DevkitCode.DEVKIT_INVALID_ARGUMENT,
                "status_poll_seconds and max_sessions must be positive",
            )

    @property
    def redirect_uri(self) -> str:
        """The callback registered for this client at the OP."""
        return f"{self.base_url}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        """Where the OP sends the browser after RP-initiated logout (exact match)."""
        return f"{self.base_url}/"

    @property
    def discovery_url(self) -> str:
        """OpenID Connect Discovery 1.0 §4: the issuer plus the well-known path."""
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def secure_cookies(self) -> bool:
        """Mark the cookie Secure whenever the webmail is served over https."""
        return urlsplit(self.base_url).scheme == "https"


def client_secret_from(
    explicit: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, bool]:
    """The client secret: the flag, else the environment, else the demo's; and whether
    the public demo secret is in use (the caller warns about it)."""
    if explicit:
        return explicit, False
    env = os.environ if environ is None else environ
    from_env = env.get(CLIENT_SECRET_ENV, "")
    if from_env:
        return from_env, False
    return DEMO_CLIENT_SECRET, True
