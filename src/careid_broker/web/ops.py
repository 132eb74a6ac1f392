"""Operations endpoints: `/healthz` (the process answers), `/readyz` (store and directory
answer, schema current), `/metrics` (Prometheus, from allowed networks only).

A load balancer takes an instance out of rotation while /readyz fails and puts it back
when it passes again; nothing here caches a failure, so recovery needs no restart.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import weakref

from alembic.runtime.migration import MigrationContext
from flask import Blueprint, jsonify, request
from flask.wrappers import Response
from sqlalchemy.exc import DBAPIError

from careid_broker.metrics import CONTENT_TYPE
from careid_broker.services import services
from careid_broker.store import Store, head_revision
from careid_broker.web.errors import error_response
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

blueprint = Blueprint("ops", __name__)


# Stores seen at the current revision: a schema does not go back while a broker runs,
# so the check (and alembic's log lines) happen once per process, not at every probe.
_CURRENT_SCHEMAS: weakref.WeakSet[Store] = weakref.WeakSet()


@functools.cache
def _head() -> str:
    return head_revision()


def schema_is_current(store: Store) -> bool:
    """Whether the database's schema is at the revision this broker ships."""
    if store in _CURRENT_SCHEMAS:
        return True
    try:
        with store.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except DBAPIError:
        return False
    if current != _head():
        return False
    _CURRENT_SCHEMAS.add(store)
    return True


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up and serving (nothing else is checked)."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Ready to sign people in: the store answers with the current schema, the directory answers."""
    svc = services()
    checks: dict[str, str] = {}
    if not svc.store.ping():
        checks["store"] = ErrorCode.STORE_UNAVAILABLE.value
    elif not schema_is_current(svc.store):
        checks["store"] = "schema_not_current"
    else:
        checks["store"] = "ok"
    if svc.directory.ping():
        checks["directory"] = "ok"
    else:
        svc.metrics.directory_errors.inc(operation="ping")
        checks["directory"] = ErrorCode.DIRECTORY_UNAVAILABLE.value
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        log.warning("not ready: %s", checks, extra={"checks": checks})
    response = jsonify({"status": "ready" if ready else "not_ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


def _allowed(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    networks = services().config.ops.metrics_allowed_networks
    return any(ip in network for network in networks)


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    if not _allowed(request.remote_addr):
        return error_response(ErrorCode.OPS_ENDPOINT_FORBIDDEN)
    return Response(services().metrics.render(), content_type=CONTENT_TYPE)
