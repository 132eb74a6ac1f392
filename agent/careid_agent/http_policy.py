"""Who may talk to the localhost API, and what a request must look like. Pure: no I/O.

- `Host` must name the agent itself (127.0.0.1 or localhost, with its port): a page
  from a DNS-rebinding domain that resolves to 127.0.0.1 still sends its own name.
- `Origin` (exactly one) must be on the allow-list, compared exactly. The `Origin`
  header is set by the browser, so a page cannot lie about it; a program on the same
  computer can, but it could also use the card directly.
- CORS and Private Network Access preflights are answered for allowed origins only, and
  every response to an allowed origin (errors too) carries CORS headers so the page can
  read the error's message.
- Bodies are small, declared with Content-Length, `application/json`, one JSON object
  with exactly the expected members (duplicates refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from careid_agent.errors import (
    BadRequestError,
    BodyTooLargeError,
    HostNotAllowedError,
    InvalidChallengeError,
    OriginNotAllowedError,
)
from careid_protocol.json_body import JsonBodyError, loads_bounded
from careid_protocol.token import is_valid_challenge

#: The largest body any endpoint needs: `{"cardSession": <256 chars>}` is ~290 bytes.
MAX_BODY_BYTES = 4096
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Content-Type"
PREFLIGHT_MAX_AGE = "600"

Headers = list[tuple[str, str]]


class RequestPolicy:
    """The agent's checks on a request's Host, Origin and body."""

    def __init__(self, *, port: int, allowed_origins: Iterable[str]) -> None:
        self.port = port
        self.allowed_origins = frozenset(allowed_origins)
        self._hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    def is_allowed(self, origin: str) -> bool:
        """Whether an origin is on the allow-list (exact comparison)."""
        return origin in self.allowed_origins

    def check_host(self, hosts: Sequence[str]) -> None:
        """Raise HostNotAllowed unless there is one Host header naming this agent."""
        if len(hosts) != 1 or hosts[0].strip().lower() not in self._hosts:
            raise HostNotAllowedError()

    def allowed_origin(self, origins: Sequence[str]) -> str | None:
        """The request's origin when it is exactly one allowed origin; else None."""
        if len(origins) == 1 and origins[0] in self.allowed_origins:
            return origins[0]
        return None

    def check_origin(self, origins: Sequence[str]) -> str:
        """The allowed origin, or OriginNotAllowed (missing, several, or not listed)."""
        origin = self.allowed_origin(origins)
        if origin is None:
            raise OriginNotAllowedError()
        return origin

    @staticmethod
    def cors_headers(origin: str) -> Headers:
        """Headers letting an allowed origin read a response (no cookies: no credentials)."""
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]

    def preflight_headers(self, origin: str, request: Mapping[str, str]) -> Headers:
        """The answer to an allowed origin's CORS preflight.

        Private Network Access (Chromium before Local Network Access replaced it) asks
        with `Access-Control-Request-Private-Network: true` and needs the matching allow
        header before a public page may reach a loopback address.
        """
        headers = self.cors_headers(origin) + [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
            ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
        ]
        if request.get("access-control-request-private-network", "").lower() == "true":
            headers.append(("Access-Control-Allow-Private-Network", "true"))
        return headers


def check_body_length(content_length: Sequence[str], transfer_encoding: Sequence[str]) -> int:
    """The declared body length, if it is one plain number within the limit."""
    if transfer_encoding:
        raise BadRequestError(
            "The smartcard agent could not understand the request (chunked bodies are not"
            " accepted)."
        )
    if not content_length:
        return 0
    value = content_length[0].strip() if len(content_length) == 1 else ""
    # ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses.
    if not (value.isascii() and value.isdigit()):
        raise BadRequestError()
    length = int(value)
    if length > MAX_BODY_BYTES:
        raise BodyTooLargeError()
    return length


def parse_json_object(
    body: bytes,
    content_type: str | None,
    members: set[str],
    optional: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The body as a JSON object with exactly `members`, and any of `optional`;
    BadRequest otherwise."""
    media_type, _, parameters = (content_type or "").partition(";")
    charset = parameters.strip().lower()
    if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
        raise BadRequestError(
            "The smartcard agent could not understand the request (send application/json)."
        )
    try:
        # Size and nesting bounded before parsing (a deep body would recurse in json).
        data = loads_bounded(body, max_bytes=MAX_BODY_BYTES)
    except JsonBodyError as exc:
        raise BadRequestError() from exc
    if not isinstance(data, dict) or not members <= set(data) <= members | optional:
        raise BadRequestError()
    return data


def parse_challenge(body: bytes, content_type: str | None) -> str:
    """The challenge of an authenticate request: 43 base64url characters."""
    challenge = parse_json_object(body, content_type, {"challenge"})["challenge"]
    if not isinstance(challenge, str) or not is_valid_challenge(challenge):
        raise InvalidChallengeError()
    return challenge
