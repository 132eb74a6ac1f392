"""The localhost HTTP API on the standard library's ThreadingHTTPServer.

Small and dependable on purpose: no framework, a handful of routes, every refusal a JSON
`{"error": code, "message": text}`. Checks run cheapest and most telling first: Host
(DNS rebinding), Origin (the allow-list), route and method, body; only then does a
request reach the card. Connections are capped, requests time out, and the server
banner names no software version.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from careid_agent.errors import (
    AgentBusyError,
    AgentError,
    BadRequestError,
    CardError,
    MethodNotAllowedError,
    NoReaderError,
    NotFoundError,
    PinBlockedError,
    WrongPinError,
)
from careid_agent.events import EventHub, StreamClosed
from careid_agent.http_policy import (
    Headers,
    RequestPolicy,
    check_body_length,
    parse_challenge,
    parse_json_object,
)
from careid_agent.service import AgentService
from careid_agent.signings import SIGNING_HEADER
from careid_protocol.errors import ErrorCode, message_for

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
#: Seconds a client may take to send its request (not the time a sign-in may take).
REQUEST_TIMEOUT = 15.0
#: Seconds a new connection may stay silent before it is closed. A browser sends its
#: request at once; a connection that brings none (any page can preconnect to a
#: localhost name) must not sit on a slot an allowed page's request needs.
FIRST_BYTE_TIMEOUT = 2.0
#: Connections allowed to wait for their first byte at once; past it the one that has
#: waited longest is closed to make room, so silent connections never shut others out.
MAX_WAITING = 64
#: How often an idle event stream checks whether its page has gone.
_SSE_POLL = 0.5

_STATUS: dict[ErrorCode, HTTPStatus] = {
    ErrorCode.BAD_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorCode.INVALID_CHALLENGE: HTTPStatus.BAD_REQUEST,
    ErrorCode.INVALID_CARD_SESSION: HTTPStatus.BAD_REQUEST,
    ErrorCode.HOST_NOT_ALLOWED: HTTPStatus.FORBIDDEN,
    ErrorCode.ORIGIN_NOT_ALLOWED: HTTPStatus.FORBIDDEN,
    ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: HTTPStatus.METHOD_NOT_ALLOWED,
    ErrorCode.BODY_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    # The person or the card said no.
    ErrorCode.WRONG_PIN: HTTPStatus.FORBIDDEN,
    ErrorCode.PIN_BLOCKED: HTTPStatus.FORBIDDEN,
    ErrorCode.PIN_INVALID_FORMAT: HTTPStatus.FORBIDDEN,
    ErrorCode.PIN_ENTRY_CANCELLED: HTTPStatus.FORBIDDEN,
    ErrorCode.PIN_ENTRY_TIMEOUT: HTTPStatus.FORBIDDEN,
    ErrorCode.CARD_SECURITY_NOT_SATISFIED: HTTPStatus.FORBIDDEN,
    # The workstation is not in a state to sign: no reader, no card, the wrong card.
    ErrorCode.NO_READER: HTTPStatus.CONFLICT,
    ErrorCode.NO_CARD: HTTPStatus.CONFLICT,
    ErrorCode.CARD_REMOVED: HTTPStatus.CONFLICT,
    ErrorCode.NOT_PIV_CARD: HTTPStatus.CONFLICT,
    ErrorCode.CARD_NO_CERTIFICATE: HTTPStatus.CONFLICT,
    ErrorCode.CARD_UNSUPPORTED_KEY: HTTPStatus.CONFLICT,
    ErrorCode.CERTIFICATE_MALFORMED: HTTPStatus.CONFLICT,
    # Try again in a moment.
    ErrorCode.CARD_BUSY: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.READER_BUSY: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.AGENT_BUSY: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.PIN_PROVIDER_UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.CARD_COMMUNICATION: HTTPStatus.BAD_GATEWAY,
}
#: The code for each status http.server sends by itself (`send_error`).
_SEND_ERROR_CODES: dict[int, ErrorCode] = {
    HTTPStatus.NOT_FOUND: ErrorCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
    HTTPStatus.NOT_IMPLEMENTED: ErrorCode.METHOD_NOT_ALLOWED,  # a method it has no do_X for
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ErrorCode.BODY_TOO_LARGE,
    HTTPStatus.REQUEST_URI_TOO_LONG: ErrorCode.BODY_TOO_LARGE,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ErrorCode.BODY_TOO_LARGE,
    HTTPStatus.SERVICE_UNAVAILABLE: ErrorCode.AGENT_BUSY,
    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: ErrorCode.BAD_REQUEST,  # the client's request
}
_RETRY_LATER = {ErrorCode.CARD_BUSY, ErrorCode.READER_BUSY, ErrorCode.AGENT_BUSY}


def http_status(code: ErrorCode) -> HTTPStatus:
    """The HTTP status for an error code (500 for the agent's own failures)."""
    return _STATUS.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)


def error_body(error: AgentError | CardError) -> dict[str, Any]:
    """`{"error", "message"}`, and `triesLeft` for PIN refusals."""
    body: dict[str, Any] = {"error": error.code.value, "message": error.message}
    if isinstance(error, WrongPinError):
        body["triesLeft"] = error.retries_left
    elif isinstance(error, PinBlockedError):
        body["triesLeft"] = 0
    return body


class LogBudget:
    """At most `limit` log lines per `window` seconds; past it, lines are counted, and
    the next line let through says how many were left out. For the refusals of pages
    that are not allowed: any page can send them, as fast as it likes, and must not
    rotate the log (and the sign-ins it records) away."""

    def __init__(
        self, *, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._used = 0
        self._left_out = 0

    def take(self) -> int | None:
        """None: leave this line out. Else log it, with this many left out before it."""
        now = self._clock()
        with self._lock:
            if now - self._started >= self._window:
                self._started, self._used = now, 0
            if self._used >= self._limit:
                self._left_out += 1
                return None
            self._used += 1
            left_out, self._left_out = self._left_out, 0
            return left_out


class AgentHTTPServer(ThreadingHTTPServer):
    """Listens on 127.0.0.1 only, with a cap on simultaneous connections."""

    daemon_threads = True
    # Windows' SO_REUSEADDR lets another program bind the same port and steal requests;
    # there, ask for the port exclusively instead.
    allow_reuse_address = sys.platform != "win32"

    def __init__(
        self,
        port: int,
        *,
        service: AgentService,
        hub: EventHub,
        allowed_origins: frozenset[str] | tuple[str, ...],
        keepalive: float = 15.0,
        max_connections: int = MAX_CONNECTIONS,
        first_byte_timeout: float = FIRST_BYTE_TIMEOUT,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.service = service
        self.hub = hub
        self.keepalive = keepalive
        # A slot is taken when a connection's request arrives, not when it is accepted.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._first_byte_timeout = first_byte_timeout
        self._max_waiting = max_waiting
        # Accepted connections waiting for their first byte, oldest first.
        self._waiting: dict[socket.socket, None] = {}
        self._waiting_lock = threading.Lock()
        self.foreign_refusals = LogBudget()
        super().__init__(("127.0.0.1", port), AgentRequestHandler)
        self.policy = RequestPolicy(port=self.port, allowed_origins=allowed_origins)

    @property
    def port(self) -> int:
        """The port actually bound (useful when asked for port 0)."""
        return int(self.server_address[1])

    def server_bind(self) -> None:
        """Bind, exclusively on Windows."""
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
        if exclusive is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve on a new thread; room is made by closing the connection that has waited
        longest for its first byte when too many wait."""
        evicted: socket.socket | None = None
        with self._waiting_lock:
            if len(self._waiting) >= self._max_waiting:
                evicted = next(iter(self._waiting))
                del self._waiting[evicted]
            self._waiting[request] = None
        if evicted is not None:
            _wake(evicted)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._stop_waiting(request)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke mid-answer: worth a debug line, not a traceback."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Wait for the connection's first byte, then take a slot and handle it (or
        answer "agent busy" when every slot is serving a request)."""
        try:
            arrived = _first_byte_arrives(request, self._first_byte_timeout)
        finally:
            still_waiting = self._stop_waiting(request)
        if not (arrived and still_waiting):
            # Silent past its time, closed by its client, or closed to make room.
            self.shutdown_request(request)
            return
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request, self.policy)
            self.shutdown_request(request)
            return
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _stop_waiting(self, request: socket.socket) -> bool:
        """Take `request` off the waiting list; False if it was taken off to make room."""
        with self._waiting_lock:
            return self._waiting.pop(request, False) is None


def _first_byte_arrives(sock: socket.socket, timeout: float) -> bool:
    """Whether the client sends something within `timeout` (an end of stream is not)."""
    try:
        readable, _, _ = select.select([sock], [], [], timeout)
        return bool(readable) and bool(sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):
        return False


def _wake(sock: socket.socket) -> None:
    """End a connection waiting for its first byte: its thread sees the end and closes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


#: How long a refusal waits for the request's headers to arrive (to read its Origin).
_BUSY_PEEK = 0.1
_BUSY_PEEK_BYTES = 8192


def _origin_of_waiting_request(sock: socket.socket, policy: RequestPolicy) -> str | None:
    """The allowed origin of the request waiting on `sock`, from what has arrived within
    a moment (browsers send the headers at once); None if it is not there or not allowed.
    Peeked, never waited for long."""
    try:
        readable, _, _ = select.select([sock], [], [], _BUSY_PEEK)
        if not readable:
            return None
        head = sock.recv(_BUSY_PEEK_BYTES, socket.MSG_PEEK).split(b"\r\n\r\n", 1)[0]
    except (OSError, ValueError):
        return None
    origins = [
        line.partition(b":")[2].strip().decode("latin-1")
        for line in head.split(b"\r\n")[1:]
        if line.partition(b":")[0].strip().lower() == b"origin"
    ]
    return policy.allowed_origin(origins)


def _refuse_busy(sock: socket.socket, policy: RequestPolicy) -> None:
    body = json.dumps(error_body(AgentBusyError())).encode("utf-8")
    origin = _origin_of_waiting_request(sock, policy)
    # CORS for an allowed page, so it can read "agent_busy" rather than a network error.
    cors = "".join(f"{k}: {v}\r\n" for k, v in policy.cors_headers(origin)) if origin else ""
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n"
        f"Cache-Control: no-store\r\n{cors}\r\n"
    )
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode("ascii") + body)
    except OSError:
        pass  # the client is gone already; nothing to tell it


Route = Callable[["AgentRequestHandler", str], None]


class AgentRequestHandler(BaseHTTPRequestHandler):
    """One connection to the agent's API."""

    server: AgentHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK: ~40 ms added to every sign-in (found by bench/agent_latency.py).
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        """The Server header: the product, no version for scanners to match."""
        return "careid-agent"

    # -- dispatch ------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch("OPTIONS")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        origin: str | None = None
        try:
            policy = self.server.policy
            policy.check_host(self.headers.get_all("Host") or [])
            origins = self.headers.get_all("Origin") or []
            origin = policy.allowed_origin(origins)
            path = urlsplit(self.path).path if self.path.startswith("/") else ""
            routes = _ROUTES.get(path)
            if routes is None:
                policy.check_origin(origins)
                raise NotFoundError()
            if method == "OPTIONS":
                self._preflight(policy.check_origin(origins))
                return
            allowed = policy.check_origin(origins)
            route = routes.get(method)
            if route is None:
                raise MethodNotAllowedError()
            route(self, allowed)
        except (AgentError, CardError) as exc:
            self._send_error(exc, origin)
        except OSError as exc:
            # The page went away (tab closed, timed out); there is nobody to answer.
            self.close_connection = True
            log.debug("%s %s: connection lost: %s", method, self.path[:100], exc)
        except Exception:
            log.exception("unexpected failure handling %s %s", method, self.path[:100])
            self._send_error(AgentError(), origin)

    # -- responses -----------------------------------------------------------------------

    def _send_json(
        self, status: int, body: dict[str, Any], origin: str | None, extra: Headers | None = None
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if origin is not None:
            for name, value in self.server.policy.cors_headers(origin):
                self.send_header(name, value)
        for name, value in extra or []:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_error(self, error: AgentError | CardError, origin: str | None) -> None:
        status = http_status(error.code)
        # The page gets the plain message; the log gets what IT support needs.
        detail = f" ({error.detail})" if error.detail else ""
        if status >= 500 or status == HTTPStatus.BAD_GATEWAY or isinstance(error, NoReaderError):
            log.warning("%s %s: %s%s", self.command, self.path[:100], error.code.value, detail)
        elif origin is not None:
            log.info("%s %s refused: %s%s", self.command, self.path[:100], error.code.value, detail)
        else:
            # Not an allowed page's request: anyone's, as often as they like.
            left_out = self.server.foreign_refusals.take()
            if left_out is not None:
                more = (
                    f" ({left_out} such refusals left out of the log before it)" if left_out else ""
                )
                log.info(
                    "%s %s refused: %s%s%s",
                    self.command,
                    self.path[:100],
                    error.code.value,
                    detail,
                    more,
                )
        extra: Headers = [("Connection", "close")]
        if error.code in _RETRY_LATER:
            extra.append(("Retry-After", "1"))
        # An unread body would be taken for the next request: close after any refusal.
        self.close_connection = True
        self._send_json(status, error_body(error), origin, extra)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Requests http.server refuses itself (bad request line, headers too long, an
        unknown method) answer JSON too, with the code that matches the status."""
        self.close_connection = True
        # An unparseable request line leaves the version at HTTP/0.9, which has no status
        # line; answer in HTTP/1.0 so the client can read the refusal.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        error = _SEND_ERROR_CODES.get(code)
        if error is None:
            error = ErrorCode.BAD_REQUEST if code < 500 else ErrorCode.AGENT_INTERNAL
        body = {"error": error.value, "message": message_for(error)}
        payload = json.dumps(body).encode("utf-8")
        # Headers exist only when they were parsed (an unknown method, not a header
        # too long): then an allowed page may read the refusal.
        headers = getattr(self, "headers", None)
        origin = (
            self.server.policy.allowed_origin(headers.get_all("Origin") or [])
            if headers is not None
            else None
        )
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            if origin is not None:
                for name, value in self.server.policy.cors_headers(origin):
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client went away mid-refusal

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Access log at DEBUG (paths only: nothing secret travels in a URL here)."""
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        length = check_body_length(
            self.headers.get_all("Content-Length") or [],
            self.headers.get_all("Transfer-Encoding") or [],
        )
        if not length:
            return b""
        try:
            return self.rfile.read(length)
        except TimeoutError as exc:  # announced a body, never sent it
            raise BadRequestError() from exc

    # -- routes --------------------------------------------------------------------------

    def _preflight(self, origin: str) -> None:
        self._no_body()
        request = {k.lower(): v for k, v in self.headers.items()}
        headers = self.server.policy.preflight_headers(origin, request)
        self.send_response(HTTPStatus.NO_CONTENT)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _client_gone(self) -> bool:
        """Whether the page closed its end (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _no_body(self) -> None:
        if self._read_body():
            raise BadRequestError()

    def status(self, origin: str) -> None:
        """GET /v1/status."""
        self._no_body()
        self._send_json(HTTPStatus.OK, self.server.service.status(), origin)

    def authenticate(self, origin: str) -> None:
        """POST /v1/authenticate {"challenge": C}."""
        challenge = parse_challenge(self._read_body(), self.headers.get("Content-Type"))
        signed = self.server.service.authenticate(origin, challenge)
        # The handle travels in a header: the body is the token the page forwards to
        # its broker untouched, and careid-auth:1 allows no sixth member there.
        extra: Headers = [
            (SIGNING_HEADER, signed.signing),
            ("Access-Control-Expose-Headers", SIGNING_HEADER),
        ]
        self._send_json(HTTPStatus.OK, signed.token, origin, extra)

    def card_sessions(self, origin: str) -> None:
        """POST /v1/card-sessions {"cardSession": S, "signing": H} (H optional: pages
        older than the signing handle send none)."""
        data = parse_json_object(
            self._read_body(),
            self.headers.get("Content-Type"),
            {"cardSession"},
            optional=frozenset({"signing"}),
        )
        signing = None
        if "signing" in data:
            # Sent, it must be a handle: `null` is not "no handle" (that ends the session).
            signing = "" if data["signing"] is None else data["signing"]
        answer = self.server.service.add_card_session(origin, data["cardSession"], signing)
        self._send_json(HTTPStatus.CREATED, answer, origin)

    def events(self, origin: str) -> None:
        """GET /v1/events: text/event-stream until the page or the agent goes away."""
        self._no_body()
        subscription = self.server.hub.subscribe()
        try:
            self.close_connection = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            for name, value in self.server.policy.cors_headers(origin):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"retry: 3000\n\n")
            for initial in self.server.service.current_events():
                self.wfile.write(initial.encode())
            self.wfile.flush()
            quiet_since = time.monotonic()
            while True:
                event = subscription.next(timeout=min(_SSE_POLL, self.server.keepalive))
                if event is not None:
                    self.wfile.write(event.encode())
                elif self._client_gone():
                    break  # free the stream's slot now, not at the next keep-alive
                elif time.monotonic() - quiet_since >= self.server.keepalive:
                    # A comment keeps proxies and the browser from timing the stream out.
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    continue
                self.wfile.flush()
                quiet_since = time.monotonic()
        except (StreamClosed, OSError):
            pass  # the agent is stopping, the page went away, or it stopped reading
        finally:
            subscription.close()


_ROUTES: dict[str, dict[str, Route]] = {
    "/v1/status": {"GET": AgentRequestHandler.status},
    "/v1/authenticate": {"POST": AgentRequestHandler.authenticate},
    "/v1/card-sessions": {"POST": AgentRequestHandler.card_sessions},
    "/v1/events": {"GET": AgentRequestHandler.events},
}
