"""Operations endpoints: `/healthz` (the process answers), `/readyz` (store and directory
answer, schema current, signing keys decrypt), `/metrics` (Prometheus, from allowed
networks only).

`/metrics` judges the client address. With `[broker] trusted_proxies = 0` that is the
TCP peer, which for a reverse proxy on the same host is 127.0.0.1 for every client:
such a request (it carries a proxy's forwarding header) is refused rather than trusted.

A load balancer takes an instance out of rotation while /readyz fails and puts it back
when it passes again, with no restart. Only the signing key check keeps its answer, for
a few seconds (`oidc.keys.READY_CHECK_SECONDS`): a decryption per probe is wasted work.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from flask import Blueprint, jsonify, request
from flask.wrappers import Response

from careid_broker.codes import BrokerCode
from careid_broker.metrics import CONTENT_TYPE
from careid_broker.store import schema_is_current
from careid_broker.web.context import current_broker
from careid_broker.web.errors import error_response

log = logging.getLogger(__name__)

blueprint = Blueprint("ops", __name__)

# Headers a reverse proxy adds naming the client it forwards for (RFC 7239 and the
# de-facto ones). Their values are not read here, only their presence.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up and serving (nothing else is checked)."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Ready to sign people in: the store answers with the current schema and commits a
    write (a full disk answers reads only), the directory answers, and the current
    signing keys load and decrypt (checked once the store is known to answer)."""
    svc = current_broker()
    checks: dict[str, str] = {}
    if not svc.store.ping():
        checks["store"] = BrokerCode.STORE_UNAVAILABLE.value
    elif not schema_is_current(svc.store):
        checks["store"] = "schema_not_current"
    elif not svc.store.prove_writable(socket.gethostname()):
        checks["store"] = "not_writable"
    else:
        checks["store"] = "ok"
    if svc.directory.ping():
        checks["directory"] = "ok"
    else:
        svc.metrics.directory_errors.inc(operation="ping")
        checks["directory"] = BrokerCode.DIRECTORY_UNAVAILABLE.value
    # The keys are in the store: without it they cannot be checked (nor used).
    checks["signing_key"] = svc.oidc.signer.ready() if checks["store"] == "ok" else "not_checked"
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
    networks = current_broker().config.ops.metrics_allowed_networks
    return any(ip in network for network in networks)


def _untrusted_proxy_headers() -> list[str]:
    """The forwarding headers present while no proxy is trusted (none when one is)."""
    if current_broker().config.broker.trusted_proxies:
        return []
    return [name for name in PROXY_HEADERS if name in request.headers]


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    forwarded = _untrusted_proxy_headers()
    if forwarded:
        # Fail closed: the peer is a proxy whose client could be anyone.
        log.warning(
            "refused /metrics: the request came through a proxy (%s) but [broker]"
            " trusted_proxies = 0, so the client's address is unknown; set trusted_proxies"
            " to the number of proxies in front of the broker, or let the scraper reach the"
            " broker's bind address directly",
            ", ".join(forwarded),
            extra={"error_code": BrokerCode.OPS_ENDPOINT_FORBIDDEN.value, "headers": forwarded},
        )
        return error_response(BrokerCode.OPS_ENDPOINT_FORBIDDEN)
    if not _allowed(request.remote_addr):
        return error_response(BrokerCode.OPS_ENDPOINT_FORBIDDEN)
    return Response(current_broker().metrics.render(), content_type=CONTENT_TYPE)
