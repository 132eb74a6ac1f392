"""How views reach the broker: `current_broker()`, the one `Broker` of the running app.

`create_app` builds the `Broker` once and `init_app(app, broker)` keeps it on the app;
views call `current_broker()` and go through its services. The web layer's request
facts for the auditor (client address, request id) are here too.
"""

from __future__ import annotations

from flask import Flask, current_app, g, has_request_context, request

from careid_broker.auditing import NO_REQUEST, RequestFacts
from careid_broker.broker import Broker
from careid_broker.logging_setup import current_request_id

EXTENSION_KEY = "careid"


_READ_UNIT = "careid_read_unit"


def init_app(app: Flask, broker: Broker) -> None:
    """Make `broker` the one `current_broker()` returns for this app, and give each
    request one read-only store session for the reads before (and after) its write."""
    app.extensions[EXTENSION_KEY] = broker

    def open_read_unit() -> None:
        unit = broker.store.read_unit()
        unit.__enter__()
        setattr(g, _READ_UNIT, unit)

    def close_read_unit(_exc: BaseException | None) -> None:
        unit = g.pop(_READ_UNIT, None)
        if unit is not None:
            unit.__exit__(None, None, None)

    app.before_request(open_read_unit)
    app.teardown_request(close_read_unit)


def broker_of(app: Flask) -> Broker:
    """The broker `create_app` built for `app`."""
    found = app.extensions.get(EXTENSION_KEY)
    if not isinstance(found, Broker):
        raise RuntimeError("the broker is not set up: build the app with create_app")
    return found


def current_broker() -> Broker:
    """The broker of the app handling the current request (or app context)."""
    return broker_of(current_app._get_current_object())  # type: ignore[attr-defined]


def request_facts() -> RequestFacts:
    """The current request's client address (after the trusted-proxy fix-up) and id."""
    if not has_request_context():
        return NO_REQUEST
    return RequestFacts(client_address=request.remote_addr, request_id=current_request_id())
