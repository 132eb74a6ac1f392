"""No NUL character gets past the front door.

No address, query parameter or form field the broker takes has a use for NUL, and
PostgreSQL cannot store one in text: a value carrying it, looked up or kept, would end
in a database error rather than an answer. Every request is checked before any other
hook reads it; a NUL anywhere is refused with `request_invalid` (400) and, at an address
the broker serves, audited (`request.refused`, with the endpoint and where the NUL
was).

`/authorize` checks its own parameters, control characters included, and answers the
relying party in OAuth's terms (`web.oidc_authorize`); the token, revocation and
userinfo endpoints are answered here in OAuth's JSON (`invalid_request`).
"""

from __future__ import annotations

import logging

from flask import Flask, request
from flask.wrappers import Response

from careid_broker.codes import BrokerCode
from careid_broker.store import Outcome
from careid_broker.web.context import current_broker
from careid_broker.web.errors import OAUTH_JSON_ENDPOINTS, error_response, oauth_json_error

log = logging.getLogger(__name__)

EVENT = "request.refused"
#: Endpoints that check their own parameters and answer in their protocol's terms.
_OWN_CHECKS = frozenset({"oidc.authorize"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _where_nul() -> str | None:
    """Which part of the request carries a NUL character, or None."""
    if "\x00" in request.path:
        return "path"
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            return "query"
    if request.mimetype in _FORM_TYPES:
        for name, value in request.form.items(multi=True):
            if "\x00" in name or "\x00" in value:
                return "form"
    return None


def _check() -> Response | None:
    if request.endpoint in _OWN_CHECKS:
        return None
    where = _where_nul()
    if where is None:
        return None
    if request.endpoint is None:
        # An address no page answers: a 404 with or without the NUL, and no audit
        # entry for anyone to write by sending junk (flooding is the proxy's to stop).
        log.info("a request to an unknown address with a NUL in its %s: refused", where)
        return error_response(BrokerCode.REQUEST_INVALID, status=400)
    current_broker().audit(
        EVENT,
        outcome=Outcome.FAILURE,
        code=BrokerCode.REQUEST_INVALID,
        details={"endpoint": request.endpoint, "nul_in": where},
    )
    if request.endpoint in OAUTH_JSON_ENDPOINTS:
        return oauth_json_error(400, f"The request's {where} contains a NUL character.")
    return error_response(BrokerCode.REQUEST_INVALID, status=400)


def init_app(app: Flask) -> None:
    """Check every request before the other hooks read it."""
    app.before_request(_check)
