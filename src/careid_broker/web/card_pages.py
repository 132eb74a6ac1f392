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
from careid_broker.codes import BrokerCode, Code, message_for, status_for
from careid_broker.errors import BrokerError
from careid_broker.logging_setup import current_request_id
from careid_broker.store import MAX_TRANSACTION_ID_LENGTH, Outcome
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import csrf_token
from careid_broker.web.security_headers import content_security_policy
from careid_protocol.json_body import HostileBodyError, JsonBodyError, loads_bounded
from careid_protocol.token import MAX_TOKEN_JSON_BYTES

#: A card endpoint's body: the token plus the challenge, the transaction id and JSON.
MAX_CARD_BODY_BYTES = MAX_TOKEN_JSON_BYTES + MAX_TRANSACTION_ID_LENGTH + 1024


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def json_refusal(
    code: Code,
    *,
    status: int | None = None,
    extra: Mapping[str, Any] | None = None,
    message: str | None = None,
) -> Response:
    """`{"error", "message", "request_id", …}` with the code's status (JSON always);
    `message` when the code's own does not fit where the person is."""
    body: dict[str, Any] = {
        "error": code.value,
        "message": message or message_for(code),
        "request_id": current_request_id(),
    }
    body.update(extra or {})
    response = jsonify(body)
    response.status_code = status or status_for(code)
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


class RefusedBodyError(BrokerError):
    """A JSON body too large or nested too deeply to parse at all."""

    default_code = BrokerCode.REQUEST_INVALID


def read_json_body(max_bytes: int = MAX_CARD_BODY_BYTES) -> dict[str, Any] | None:
    """The request's JSON object, or None (not JSON, not an object).

    A body over `max_bytes` or nested too deeply is refused outright
    (`RefusedBodyError`, 400 request_invalid): it is never handed to the parser.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise RefusedBodyError(detail=f"a body of {request.content_length} bytes")
    if not request.is_json:
        return None
    try:
        data = loads_bounded(request.get_data(cache=True), max_bytes=max_bytes)
    except HostileBodyError as exc:
        raise RefusedBodyError(detail=str(exc)) from exc
    except JsonBodyError:
        return None
    return data if isinstance(data, dict) else None


def refuse_body(exc: RefusedBodyError, event: str) -> Response:
    """Audit a body refused unparsed, and answer 400 request_invalid in JSON."""
    current_broker().audit(
        event,
        outcome=Outcome.FAILURE,
        code=exc.code,
        details={"endpoint": request.endpoint, "why": exc.detail},
    )
    return json_refusal(exc.code)


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
    BrokerCode.AGENT_UNREACHABLE,
    BrokerCode.BROKER_UNREACHABLE,
    BrokerCode.BROWSER_UNSUPPORTED,
    BrokerCode.CARD_LOCK_NOT_ARMED,
    BrokerCode.CARD_LOCK_NOT_ARMED_SIGNED_IN,
)


def script_context(card: CardServices) -> dict[str, Any]:
    """What a card page's template needs to wire up its script."""
    return {
        "enabled": card.available,
        "agent_url": card.settings.agent_url,
        "install_url": install_url(card),
        "csrf_token": csrf_token(),
        "session_lock": card.settings.session_lock,
        "removed_url": url_for("card.removed"),
        "messages": {code.value: message_for(code) for code in SCRIPT_CODES},
    }
