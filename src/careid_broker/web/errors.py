"""Error pages (and JSON errors for API clients), one per stable error code.

Every refusal the broker shows names its code, says in plain words what to do next, and
carries the request id so the service desk can find the log lines. The per-code advice
(where to accept the AUP, whom to ask about a disabled account) is in `error.html`; each
code's message, status and heading are `careid_broker.codes`'.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from flask import Flask, current_app, jsonify, render_template, request
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException

from careid_broker.codes import (
    AupRoute,
    BrokerCode,
    Code,
    aup_message,
    heading_for,
    message_for,
    status_for,
)
from careid_broker.errors import BrokerError
from careid_broker.logging_setup import current_request_id
from careid_broker.web.context import current_broker

log = logging.getLogger(__name__)

# How long to suggest waiting when the broker itself or its directory is down.
UNAVAILABLE_RETRY_AFTER = timedelta(seconds=30)

#: Endpoints whose clients read OAuth's JSON errors (RFC 6749 §5.2, RFC 6750 §3.1).
OAUTH_JSON_ENDPOINTS = frozenset({"oidc.token", "oidc.revoke", "oidc.userinfo"})
_OAUTH_PATHS = "careid_oauth_json_paths"


def oauth_json_error(status: int, description: str) -> Response:
    """An OAuth error body (`invalid_request`), as those endpoints' clients read them."""
    response = jsonify({"error": "invalid_request", "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _for_oauth_client() -> bool:
    """Whether this request went to /token, /revoke or /userinfo (by its path too: a
    method the route does not take finds no endpoint)."""
    if request.endpoint in OAUTH_JSON_ENDPOINTS:
        return True
    if request.endpoint is not None:
        return False
    paths = current_app.extensions.get(_OAUTH_PATHS)
    if paths is None:  # the routes are all registered by the first request
        paths = frozenset(
            rule.rule
            for rule in current_app.url_map.iter_rules()
            if rule.endpoint in OAUTH_JSON_ENDPOINTS
        )
        current_app.extensions[_OAUTH_PATHS] = paths
    return request.path in paths


def wants_json() -> bool:
    """Whether the client asked for JSON rather than a page."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def minutes_text(delta: timedelta) -> str:
    """ "1 minute", "5 minutes": a wait as a person reads it (rounded up)."""
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


def error_response(
    code: Code,
    *,
    status: int | None = None,
    retry_url: str | None = None,
    retry_after: timedelta | None = None,
) -> Response:
    """The page (or JSON body) for a code, with its status and any Retry-After."""
    status = status or status_for(code)
    if retry_after is None and status == 503:
        retry_after = UNAVAILABLE_RETRY_AFTER
    message = message_for(code)
    aup_writable = current_broker().config.directory.writable
    if code is BrokerCode.AUP_NOT_ACCEPTED and aup_writable:
        # No password was checked on the way here: one is, on the way to accepting it.
        message = aup_message(AupRoute.PASSWORD)
    response: Response
    if wants_json():
        response = jsonify(
            {"error": code.value, "message": message, "request_id": current_request_id()}
        )
    else:
        page = render_template(
            "error.html",
            heading=heading_for(code),
            code=code.value,
            message=message,
            request_id=current_request_id(),
            retry_url=retry_url,
            wait=minutes_text(retry_after) if retry_after and status == 429 else None,
            signin=current_broker().config.signin,
            aup_writable=aup_writable,
        )
        response = Response(page, mimetype="text/html")
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after.total_seconds())))
    return response


def _broker_error(exc: BrokerError) -> Response:
    # `detail` is for operators and never holds a secret (BrokerError's contract).
    log.warning(
        "refused: %s", exc.code.value, extra={"error_code": exc.code.value, "detail": exc.detail}
    )
    return error_response(exc.code)


def _http_error(exc: HTTPException) -> Response:
    if exc.code == 404:
        return error_response(BrokerCode.PAGE_NOT_FOUND)
    if exc.code is not None and exc.code >= 500:
        log.error("server error %s: %s", exc.code, exc.description)
        return error_response(BrokerCode.BROKER_INTERNAL, status=exc.code)
    status = exc.code if exc.code is not None and exc.code >= 400 else 400
    if _for_oauth_client():
        # A relying party's OAuth client reads JSON here, never a page (README).
        response = oauth_json_error(status, _OAUTH_DESCRIPTIONS.get(status, "Bad request."))
    else:
        response = error_response(BrokerCode.REQUEST_INVALID, status=status)
    if exc.code == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


_OAUTH_DESCRIPTIONS = {
    405: "This endpoint does not take that method.",
    413: "The request body is too large.",
}


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error: %s", type(exc).__name__)
    return error_response(BrokerCode.BROKER_INTERNAL)


def init_app(app: Flask) -> None:
    """Register the handlers."""
    app.register_error_handler(BrokerError, _broker_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
