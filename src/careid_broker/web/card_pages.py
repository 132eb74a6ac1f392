"""What the card pages share: the CSP that lets their script reach the agent, the
same-origin check for their JSON endpoints, and JSON refusals with a status per code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import jsonify, request, url_for
from flask.wrappers import Response

from careid_broker.card.wiring import CardServices
from careid_broker.logging_setup import current_request_id
from careid_broker.web.csrf import csrf_token
from careid_broker.web.errors import status_for
from careid_broker.web.security_headers import content_security_policy
from careid_protocol.errors import ErrorCode, message_for
from careid_protocol.token import MAX_TOKEN_JSON_BYTES

#: A card endpoint's body: the token plus the challenge, the transaction id and JSON.
MAX_CARD_BODY_BYTES = MAX_TOKEN_JSON_BYTES + 1024

_CARD_STATUS: dict[ErrorCode, int] = {
    ErrorCode.REQUEST_NOT_SAME_ORIGIN: 403,
    ErrorCode.CERTIFICATE_MALFORMED: 403,
    ErrorCode.CERTIFICATE_UNTRUSTED: 403,
    ErrorCode.CERTIFICATE_KEY_UNSUPPORTED: 403,
    ErrorCode.CERTIFICATE_EXPIRED: 403,
    ErrorCode.CERTIFICATE_NOT_YET_VALID: 403,
    ErrorCode.CERTIFICATE_USAGE: 403,
    ErrorCode.CERTIFICATE_POLICY: 403,
    ErrorCode.CERTIFICATE_REVOKED: 403,
    ErrorCode.IDENTITY_MISSING: 403,
    ErrorCode.REVOCATION_UNAVAILABLE: 503,
    ErrorCode.CARD_NOT_REGISTERED: 403,
    ErrorCode.CARD_CERTIFICATE_NOT_REGISTERED: 403,
    ErrorCode.CARD_ACCOUNT_MISSING: 403,
    ErrorCode.CARD_IDENTITY_MISMATCH: 403,
    ErrorCode.REGISTRATION_CARD_LINKED: 409,
    ErrorCode.REGISTRATION_ACCOUNT_LINKED: 409,
    ErrorCode.REGISTRATION_EXPIRED: 400,
    ErrorCode.REGISTRATION_PREREQUISITES_MISSING: 403,
    ErrorCode.CARD_REMOVAL_THROTTLED: 429,
}


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def card_status(code: ErrorCode) -> int:
    """The HTTP status a card refusal is answered with."""
    return _CARD_STATUS.get(code) or status_for(code)


def json_refusal(
    code: ErrorCode, *, status: int | None = None, extra: Mapping[str, Any] | None = None
) -> Response:
    """`{"error", "message", "request_id", …}` with the code's status (JSON always)."""
    body: dict[str, Any] = {
        "error": code.value,
        "message": message_for(code),
        "request_id": current_request_id(),
    }
    body.update(extra or {})
    response = jsonify(body)
    response.status_code = status or card_status(code)
    return response


def same_origin(own_origin: str) -> bool:
    """Whether a script request came from the broker's own pages.

    `Origin` (sent by every browser on a POST) must be the broker's own, and
    `Sec-Fetch-Site`, when the browser sends it, must say same-origin. A request with
    neither is no browser's: refused as well.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == own_origin
    return site == "same-origin"


def read_json_body() -> dict[str, Any] | None:
    """The request's JSON object, or None (too large, not JSON, not an object)."""
    if request.content_length is not None and request.content_length > MAX_CARD_BODY_BYTES:
        return None
    if not request.is_json:
        return None
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


def with_agent_csp(response: Response, card: CardServices) -> Response:
    """The page's CSP, also letting its script call the agent (`connect-src`)."""
    if card.available:
        response.headers["Content-Security-Policy"] = (
            f"{content_security_policy()}; connect-src 'self' {card.settings.agent_origin}"
        )
    return response


def install_url(card: CardServices) -> str:
    """Where the agent's install instructions are (configured, else the broker's page)."""
    return card.settings.agent_install_url or url_for("card.agent_help")


#: Refusals the pages' script detects itself (no server answer carries them): their
#: messages are written into the page, so the registry stays the one source of wording.
SCRIPT_CODES = (
    ErrorCode.AGENT_UNREACHABLE,
    ErrorCode.BROKER_UNREACHABLE,
    ErrorCode.BROWSER_UNSUPPORTED,
)


def script_context(card: CardServices) -> dict[str, Any]:
    """What a card page's template needs to wire up its script."""
    return {
        "enabled": card.available,
        "agent_url": card.settings.agent_url,
        "install_url": install_url(card),
        "csrf_token": csrf_token(),
        "session_lock": card.settings.session_lock,
        "messages": {code.value: message_for(code) for code in SCRIPT_CODES},
    }
