"""`create_app`: the broker's Flask application factory.

Everything the views use is built here once and kept in `app.extensions["careid"]`
(`services()`); tests pass a directory, a store or a clock of their own.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime
from types import ModuleType

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from careid_broker.admin.api import blueprint as api_blueprint
from careid_broker.admin.console import blueprint as admin_blueprint
from careid_broker.card import wiring as card_wiring
from careid_broker.card.web import blueprint as card_blueprint
from careid_broker.config import BrokerConfig, load_config
from careid_broker.directory import Directory, LdapDirectory
from careid_broker.errors import BrokerError
from careid_broker.metrics import BrokerMetrics
from careid_broker.registration.web import blueprint as registration_blueprint
from careid_broker.services import EXTENSION_KEY, BrokerServices, notify_relying_parties
from careid_broker.signin.password import PasswordSignin, ThrottlePolicies
from careid_broker.store import KeyAlgorithm, Repositories, Store, create_store, utc_now
from careid_broker.web import csrf, errors, instrumentation, security_headers, signin_session
from careid_broker.web.login import blueprint as login_blueprint
from careid_broker.web.ops import blueprint as ops_blueprint

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
) -> Flask:
    """The broker app. Without `config`, `$CAREID_CONFIG` or `config/broker.toml` is read."""
    config = config or load_config()
    if clock is None:
        clock = store.clock if store is not None else utc_now
    if store is None:
        store = create_store(
            config.database.url,
            clock=clock,
            busy_timeout=config.database.busy_timeout,
            pool_size=config.database.pool_size,
        )
    if directory is None:
        directory = LdapDirectory(config.directory, clock=clock)

    app = Flask(__name__)
    _configure_flask(app, config)
    repos = Repositories.build(
        store,
        key_passphrase=(
            config.tokens.signing_key_passphrase.encode("utf-8")
            if config.tokens.signing_key_passphrase
            else None
        ),
        key_algorithm=KeyAlgorithm.RS256,
        code_ttl=config.tokens.code_lifetime,
        access_token_ttl=config.tokens.access_token_lifetime,
        refresh_token_ttl=config.tokens.refresh_token_lifetime,
        throttle_policy=config.signin.account_throttle,
        challenge_ttl=config.card.challenge_lifetime,
        logout_retry=config.oidc.logout_retry if config.oidc is not None else None,
    )
    metrics = BrokerMetrics()
    metrics.registry.gauge(
        "careid_logout_outbox_pending",
        "Back-channel logouts waiting to be delivered (absent while the store is down).",
        lambda: _pending_logouts(repos),
    )
    app.extensions[EXTENSION_KEY] = BrokerServices(
        config=config,
        store=store,
        repos=repos,
        directory=directory,
        clock=clock,
        metrics=metrics,
        password_signin=PasswordSignin(
            directory=directory,
            throttle=repos.throttle,
            policies=ThrottlePolicies(
                account=config.signin.account_throttle, address=config.signin.address_throttle
            ),
        ),
        session_ended=notify_relying_parties,
    )

    # Order matters: the request id first (every later hook logs with it), CSRF before
    # any view; after-request hooks run in reverse, so instrumentation sees the final
    # response, headers and cookies included.
    instrumentation.init_app(app)
    security_headers.init_app(app)
    signin_session.init_app(app)
    csrf.init_app(app)
    errors.init_app(app)
    app.register_blueprint(login_blueprint)
    card_wiring.init_app(app)
    app.register_blueprint(card_blueprint)
    app.register_blueprint(registration_blueprint)
    app.register_blueprint(ops_blueprint)
    app.register_blueprint(admin_blueprint)
    app.register_blueprint(api_blueprint)
    _register_oidc(app)
    if config.broker.dev:
        log.warning("the broker runs in DEVELOPMENT mode: cookies are not Secure, no HSTS")
    return app


def _configure_flask(app: Flask, config: BrokerConfig) -> None:
    secure = config.broker.secure_cookies
    app.config.update(
        SECRET_KEY=config.broker.secret_key,
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


def _pending_logouts(repos: Repositories) -> float | None:
    try:
        return float(repos.outbox.pending_count())
    except BrokerError:
        return None


def _optional_module(name: str) -> ModuleType | None:
    """The module, or None when it (not something it imports) is absent."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name and not name.startswith(f"{exc.name}."):
            raise
        return None


def _register_oidc(app: Flask) -> None:
    # TODO(lead): import careid_broker.oidc directly once the OpenID Provider has landed.
    module = _optional_module("careid_broker.oidc")
    if module is None or not hasattr(module, "blueprint"):
        log.warning("the OpenID Provider (careid_broker.oidc) is not installed")
        return
    app.register_blueprint(module.blueprint)
    init_app = getattr(module, "init_app", None)
    if callable(init_app):
        init_app(app)
