"""Per-request id, access log line and latency metrics.

The request id comes from the reverse proxy's `X-Request-ID` when it is a plain token,
else a fresh one; it is echoed in the response, shown on error pages (so a user can
quote it to the service desk) and written into every log line and audit entry.

The access log line names the route's pattern (`/admin/users/<mail>`), never the path
as typed: paths carry staff mail addresses and Care Identity UUIDs, and query strings
login transaction ids; a request that matched no route is logged as `<unmatched>`, as
its path may hold the same. Metrics are labelled by endpoint and by a method from a
fixed set, so nothing a client sends can add series.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request
from flask.wrappers import Response

from careid_broker.web.context import current_broker

log = logging.getLogger("careid_broker.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
#: Methods that get a metrics label of their own; any other is counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"


def _start() -> None:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.get("request_started")
    elapsed = time.perf_counter() - started if isinstance(started, float) else 0.0
    endpoint = request.endpoint or "none"
    method = request.method if request.method in _METHODS else "other"
    metrics = current_broker().metrics
    metrics.latency.observe(elapsed, endpoint=endpoint, method=method)
    metrics.requests.inc(endpoint=endpoint, method=method, status=str(response.status_code))
    request_id = g.get("request_id")
    if isinstance(request_id, str):
        response.headers[REQUEST_ID_HEADER] = request_id
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    log.info(
        "%s %s %s",
        request.method,
        route,
        response.status_code,
        extra={
            "method": request.method,
            "path": route,
            "endpoint": endpoint,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "client": request.remote_addr,
        },
    )
    return response


def init_app(app: Flask) -> None:
    """Install the hooks (first, so every other hook sees the request id)."""
    app.before_request(_start)
    app.after_request(_finish)
