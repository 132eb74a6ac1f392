"""The admin service and the API's OAuth parts for the app handling the request."""

from __future__ import annotations

import threading

from flask import current_app

from careid_broker.admin.api_auth import ApiAuth
from careid_broker.admin.service import AdminService
from careid_broker.auditing import audit
from careid_broker.services import services
from careid_broker.store import Tokens

API_EXTENSION_KEY = "careid_api"
_build_lock = threading.Lock()


def admin_service() -> AdminService:
    """An `AdminService` over this app's services (cheap: it holds references only).

    Built per request so that a directory, clock or session-ended hook swapped on the
    services (tests do) is the one used.
    """
    svc = services()
    return AdminService(
        repos=svc.repos,
        directory=svc.directory,
        settings=svc.config.admin,
        session_ended=svc.session_ended,
        audit=audit,
        now=svc.store.now,
    )


def api_auth() -> ApiAuth:
    """This app's API token server and bearer check, built on first use."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(API_EXTENSION_KEY)
    if isinstance(found, ApiAuth):
        return found
    with _build_lock:
        found = app.extensions.get(API_EXTENSION_KEY)
        if isinstance(found, ApiAuth):
            return found
        svc = services()
        settings = svc.config.api
        # API tokens live in the shared token table, with the [api] lifetime.
        tokens = Tokens(svc.store, access_ttl=settings.token_lifetime)
        built = ApiAuth(settings, tokens)
        app.extensions[API_EXTENSION_KEY] = built
        return built
