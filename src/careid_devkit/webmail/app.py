"""`create_webmail_app(config)`: the demo relying party's Flask application."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Flask
from flask.wrappers import Response

from careid_devkit.webmail.config import WebmailConfig
from careid_devkit.webmail.cookie_sessions import ServerSideSessions
from careid_devkit.webmail.logout_token import JtiCache, LogoutTokenValidator
from careid_devkit.webmail.provider import Provider
from careid_devkit.webmail.services import EXTENSION, STATUS_PATH, WebmailServices
from careid_devkit.webmail.sessions import SessionStore
from careid_devkit.webmail.views import bp


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_webmail_app(
    config: WebmailConfig,
    *,
    clock: Callable[[], datetime] = _utc_now,
    store: SessionStore | None = None,
) -> Flask:
    """The webmail app: sign-in through the broker, who is signed in, sign-out."""
    app = Flask("careid_devkit.webmail")
    # Nothing the webmail accepts is large: a logout token, a sign-out form.
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    store = store or SessionStore(
        clock=clock,
        idle_timeout=config.session_idle_timeout,
        absolute_timeout=config.session_absolute_timeout,
        max_sessions=config.max_sessions,
    )
    sessions = ServerSideSessions(
        store,
        cookie_name=config.cookie_name,
        secure=config.secure_cookies,
        passive_paths=frozenset({STATUS_PATH}),
    )
    app.session_interface = sessions
    provider = Provider(app, config)
    validator = LogoutTokenValidator(
        issuer=config.issuer,
        client_id=config.client_id,
        keys=provider,
        clock=clock,
        max_age=config.logout_token_max_age,
        clock_skew=config.clock_skew,
        replay=JtiCache(clock=clock),
    )
    app.extensions[EXTENSION] = WebmailServices(
        config=config,
        store=store,
        sessions=sessions,
        provider=provider,
        logout_tokens=validator,
        clock=clock,
    )
    app.register_blueprint(bp)
    csp = _content_security_policy(config)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        # Keep the authorization code and logout state out of Referer headers.
        response.headers["Referrer-Policy"] = "no-referrer"
        if not response.headers.get("Cache-Control"):
            response.headers["Cache-Control"] = "no-store"
        return response

    return app


def _content_security_policy(config: WebmailConfig) -> str:
    issuer = urlsplit(config.issuer)
    issuer_origin = f"{issuer.scheme}://{issuer.netloc}"
    # form-action covers the redirects that follow a form post (Chrome checks each hop):
    # the sign-out form goes to the OP's end_session_endpoint and comes back here.
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            f"form-action 'self' {issuer_origin}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )
