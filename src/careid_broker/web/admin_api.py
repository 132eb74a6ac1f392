"""The `api` blueprint: `/api/v1/…`, the registrations API for organisations' own systems.

Bearer tokens only (no cookies, so no CSRF token either): a request without a token is
401 with a `WWW-Authenticate` challenge, a token without the scope 403, and anything
outside the client's organisations 404 — the same answer as for something that does not
exist. Errors are JSON: `{"error": code, "message": text, "request_id": id}`.
Refusals are audited: a missing, unknown or under-scoped token as `admin.denied` (one
entry a request, as the OP's token endpoint records each refused request); an
authenticated client's refused listing, lookup, check or removal under its own event
(`admin.registrations.list`, `admin.registration.view`, `admin.registration.remove`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, jsonify, request
from flask.wrappers import Response

from careid_broker.admin.api_auth import ApiAuthRefusal, ApiToken
from careid_broker.admin.config import ApiScope
from careid_broker.admin.export import registration_json
from careid_broker.admin.openapi import openapi_document
from careid_broker.admin.reasons import Reason, parse_reason
from careid_broker.admin.removal import audit_refused_removal, remove_registration
from careid_broker.admin.rights import Actor
from careid_broker.codes import BrokerCode, Code, message_for
from careid_broker.errors import BrokerError
from careid_broker.logging_setup import current_request_id
from careid_broker.store import Outcome, StoreError
from careid_broker.web.admin_access import EVENT_DENIED
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import csrf_exempt
from careid_broker.web.errors import UNAVAILABLE_RETRY_AFTER
from careid_protocol.json_body import JsonBodyError, loads_bounded

log = logging.getLogger(__name__)

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_LIMIT = 200
#: The event of a refused listing (as the service names an out-of-scope one).
EVENT_LIST = "admin.registrations.list"
_ORG = re.compile(r"[A-Za-z0-9]{1,32}")
_REMOVAL_KEYS = frozenset({"reason", "reason_text"})
#: A reason and its text: a few hundred bytes.
MAX_REMOVAL_BODY_BYTES = 4096


def _error(code: Code, status: int, *, challenge: str | None = None) -> Response:
    response = jsonify(
        {"error": code.value, "message": message_for(code), "request_id": current_request_id()}
    )
    response.status_code = status
    if challenge:
        response.headers["WWW-Authenticate"] = challenge
    if status == 503:
        retry = UNAVAILABLE_RETRY_AFTER.total_seconds()
        response.headers["Retry-After"] = str(int(retry))
    return response


@blueprint.errorhandler(ApiAuthRefusal)
def _refused(exc: ApiAuthRefusal) -> Response:
    # Audited as the console's refused administrators are. A refused token costs one
    # entry, as at the OP's /token and /userinfo: a run of them is someone guessing.
    try:
        current_broker().audit(
            EVENT_DENIED,
            outcome=Outcome.FAILURE,
            code=exc.code,
            actor=f"api:{exc.client_id}" if exc.client_id else None,
            details={"via": "api", "path": request.path[:200]},
        )
    except StoreError as error:
        # The refusal stands; a store that is down cannot record it.
        log.warning("api refusal not audited: %s", error.code.value)
    return _error(exc.code, exc.status, challenge=exc.www_authenticate)


@blueprint.errorhandler(BrokerError)
def _broker_error(exc: BrokerError) -> Response:
    log.info("api refused: %s", exc.code.value, extra={"detail": exc.detail})
    return _error(exc.code, exc.status)


def _actor(token: ApiToken) -> Actor:
    return Actor(name=f"api:{token.client.client_id}", org_codes=token.client.org_codes, via="api")


def _invalid(detail: str) -> BrokerError:
    return BrokerError(BrokerCode.API_REQUEST_INVALID, detail=detail)


def _integer(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not minimum <= int(raw) <= maximum:
        raise _invalid(f"{name} must be a whole number from {minimum} to {maximum}")
    return int(raw)


def _text(name: str, max_length: int) -> str | None:
    raw = request.args.get(name)
    if raw is None or not raw.strip():
        return None
    if len(raw) > max_length:
        raise _invalid(f"{name} is longer than {max_length} characters")
    return raw.strip()


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """This API's OpenAPI 3.1 description."""
    response = jsonify(openapi_document(current_broker().config.broker.issuer))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@blueprint.post("/token")
@csrf_exempt
def token() -> Response:
    """OAuth 2.0 token endpoint for API clients (client credentials grant only)."""
    response, issued_to = current_broker().api.server.token_response()
    details: dict[str, Any] = {"via": "api"}
    if issued_to is not None:
        details["client_id"] = issued_to
        details["scope"] = (response.get_json(silent=True) or {}).get("scope")
    else:
        # Only a client that authenticated is the actor; a refused id is just a claim.
        auth = request.authorization
        claimed = auth.username if auth and auth.username else request.form.get("client_id")
        details["client_id_claimed"] = claimed[:64] if claimed else None
        body = response.get_json(silent=True) or {}
        details["reason"] = str(body.get("error", "error"))[:64]
    current_broker().audit(
        "api.token",
        outcome=Outcome.SUCCESS if issued_to is not None else Outcome.FAILURE,
        actor=f"api:{issued_to}" if issued_to is not None else None,
        details=details,
    )
    return response


@blueprint.get("/registrations")
def list_registrations() -> Response:
    """A page of the client's registrations, newest first."""
    actor = _actor(current_broker().api.authenticate(ApiScope.READ))
    try:
        org = _text("org", 32)
        if org is not None and not _ORG.fullmatch(org):
            raise _invalid("org must be an organisation (ODS) code")
        limit = _integer("limit", 50, minimum=1, maximum=MAX_LIMIT)
        offset = _integer("offset", 0, minimum=0, maximum=10**9)
        card_uuid, text = _text("uuid", 64), _text("q", 128)
    except BrokerError as exc:
        current_broker().audit(
            EVENT_LIST,
            outcome=Outcome.FAILURE,
            code=exc.code,
            actor=actor.name,
            details={"via": actor.via, "detail": exc.detail},
        )
        raise
    page = current_broker().admin.list_registrations(
        actor, org=org, card_uuid=card_uuid, text=text, offset=offset, limit=limit
    )
    following = offset + len(page.items)
    return jsonify(
        {
            "items": [registration_json(r) for r in page.items],
            "total": page.total,
            "offset": offset,
            "limit": limit,
            "next_offset": following if following < page.total else None,
        }
    )


@blueprint.get("/registrations/<card_uuid>")
def get_registration(card_uuid: str) -> Response:
    """One registration of the client's organisations."""
    actor = _actor(current_broker().api.authenticate(ApiScope.READ))
    # Unknown, out of scope or too long to be a UUID: the service's audited 404.
    return jsonify(registration_json(current_broker().admin.registration(actor, card_uuid)))


@blueprint.post("/registrations/<card_uuid>/check-revocation")
@csrf_exempt
def check_revocation(card_uuid: str) -> Response:
    """Check the card's revocation now; a revoked card's sessions end."""
    broker = current_broker()
    actor = _actor(broker.api.authenticate(ApiScope.WRITE))
    registration = broker.admin.registration(actor, card_uuid)
    outcome = broker.revocation_check.check(registration, actor=actor.name)
    return jsonify(
        {
            "card_uuid": registration.card_uuid,
            "result": outcome.result.value,
            "code": outcome.code,
            "sessions_ended": outcome.sessions_ended,
        }
    )


def _removal_reason() -> Reason:
    """The removal body's reason; `api_request_invalid` or `admin_reason_required`."""
    try:
        body = loads_bounded(request.get_data(cache=True), max_bytes=MAX_REMOVAL_BODY_BYTES)
    except JsonBodyError:  # not JSON, or too large or deep even to parse
        body = None
    if not request.is_json or not isinstance(body, dict) or not set(body) <= _REMOVAL_KEYS:
        raise _invalid("the body must be a JSON object with reason (and reason_text)")
    kind, text = body.get("reason"), body.get("reason_text")
    if not isinstance(kind, str) or not (text is None or isinstance(text, str)):
        raise _invalid("reason and reason_text must be strings")
    return parse_reason(kind, text)


@blueprint.post("/registrations/<card_uuid>/remove")
@csrf_exempt
def remove(card_uuid: str) -> Response:
    """Remove a registration with a reason; the person's sessions end."""
    actor = _actor(current_broker().api.authenticate(ApiScope.WRITE))
    try:
        reason = _removal_reason()
    except BrokerError as exc:
        # Audited as the command line audits a refused removal.
        audit_refused_removal(current_broker().audit, actor, card_uuid, exc.code)
        raise
    removal = remove_registration(current_broker().admin, actor, card_uuid=card_uuid, reason=reason)
    return jsonify(
        {
            "removed": registration_json(removal.registration),
            "reason": removal.reason.kind.value,
            "reason_text": removal.reason.text,
            "sessions_ended": len(removal.ended),
            "relying_parties_notified": list(removal.relying_parties),
        }
    )
