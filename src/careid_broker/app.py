"""`create_app`: the broker's Flask application factory.

It builds the one `Broker` (`build_broker`: every service, once) and hands it to each
web area's `init_app(app, broker)`; views reach it with `current_broker()`. Tests pass
a directory, a store or a clock of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from werkzeug.middleware.proxy_fix import ProxyFix

from careid_broker.broker import build_broker
from careid_broker.config import BrokerConfig, load_config
from careid_broker.directory import Directory
from careid_broker.pki import HttpFetcher
from careid_broker.store import Store
from careid_broker.web import (
    admin_api,
    admin_console,
    aup,
    card,
    context,
    csrf,
    errors,
    input_guard,
    instrumentation,
    login,
    oidc,
    ops,
    registration,
    security_headers,
    signin_cookie,
)

log = logging.getLogger(__name__)

# Forms and token requests are small; a larger body is refused before it is read.
MAX_CONTENT_LENGTH = 256 * 1024
SESSION_COOKIE_BASENAME = "careid-browser"


def create_app(
    config: BrokerConfig | None = None,
    *,
    directory: Directory | None = None,
    store: Store | None = None,
    clock: Callable[[], datetime] | None = None,
    http: HttpFetcher | None = None,
) -> Flask:
    """The broker app. Without `config`, `$CAREID_CONFIG` or `config/broker.toml` is read."""
    config = config or load_config()
    broker = build_broker(
        config,
        directory=directory,
        store=store,
        clock=clock,
        http=http,
        request_facts=context.request_facts,
    )
    app = Flask(__name__)
    _configure_flask(app, config)
    context.init_app(app, broker)

    # Order matters: the request id first (every later hook logs with it), CSRF before
    # any view; after-request hooks run in reverse, so instrumentation sees the final
    # response, headers and cookies included.
    instrumentation.init_app(app)
    security_headers.init_app(app)
    input_guard.init_app(app)  # before any hook reads the request's values
    signin_cookie.init_app(app)
    csrf.init_app(app)
    errors.init_app(app)
    for area in (login, aup, card, registration, ops, admin_console, admin_api, oidc):
        app.register_blueprint(area.blueprint)
    if config.broker.dev:
        log.warning("the broker runs in DEVELOPMENT mode: cookies are not Secure, no HSTS")
    if config.broker.dev_disable_workers:
        log.warning(
            "dev_disable_workers: no CRL refresher and no back-channel logout delivery in"
            " this process (development only)"
        )
    broker.start()
    return app


class BrowserSessionInterface(SecureCookieSessionInterface):
    """Flask's signed session cookie, with its serializer built once per key set.

    Flask builds a new serializer for every request (and itsdangerous tries it out on
    an empty value each time); the keys are fixed while the app runs, so one is kept
    and rebuilt only if `SECRET_KEY` or its fallbacks change. What is signed, and how,
    is Flask's own."""

    def __init__(self) -> None:
        self._built: tuple[tuple[object, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        built = self._built
        if built is None or built[0] != keys:
            built = (keys, super().get_signing_serializer(app))
            self._built = built
        return built[1]


def _configure_flask(app: Flask, config: BrokerConfig) -> None:
    app.session_interface = BrowserSessionInterface()
    secure = config.broker.secure_cookies
    app.config.update(
        SECRET_KEY=config.broker.secret_key,
        # Still accepted for cookies they signed while a key is being replaced.
        SECRET_KEY_FALLBACKS=list(config.broker.previous_secret_keys),
        SESSION_COOKIE_NAME=(
            f"__Host-{SESSION_COOKIE_BASENAME}" if secure else SESSION_COOKIE_BASENAME
        ),
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        PREFERRED_URL_SCHEME="https" if secure else "http",
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH,
        MAX_FORM_MEMORY_SIZE=MAX_CONTENT_LENGTH,
        TEMPLATES_AUTO_RELOAD=config.broker.dev,
    )
    if config.broker.trusted_proxies:
        hops = config.broker.trusted_proxies
        # Only as many X-Forwarded-* hops as there are proxies we run: a client can send
        # the header too, and must not choose the address it is throttled under.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
