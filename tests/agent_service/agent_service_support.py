"""Helpers for the agent service tests: the virtual card in reader "Virtual PCD 00 01",
a reader source that stays quiet (for agents over a fake card), an HTTP client that sets
Host and Origin as a browser would, an SSE reader and a stand-in broker that records
`card/removed` notices.

Reader 00 01 (vpcd port 35964) is this suite's alone: other suites use 00 00 at the same
time, which is why every agent here is pinned to 00 01 with its `reader` setting.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cardsim_profiles import make_test_profile

from careid_agent import transport
from careid_agent.transport import ReaderInfo
from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.cardsim import PivApplet, VpcdCardClient

__all__ = ["KeyAlgorithm", "make_test_profile"]

READER = "Virtual PCD 00 01"
VPCD_PORT = 35964
PIN = "246810"
ORIGIN = "https://sso.careid.example.nhs.uk"


def new_challenge() -> str:
    """A fresh challenge as a broker makes one: 32 random bytes, base64url, no padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def reader_has_card() -> bool:
    """Whether pcscd reports a card in reader 00 01."""
    return any(r.name == READER and r.card_present for r in transport.list_readers())


class CardSlot:
    """The virtual card slot of reader 00 01: insert, remove, or yank mid-command."""

    def __init__(self) -> None:
        self.client: VpcdCardClient | None = None
        #: INS byte on whose arrival the card is pulled out (None: never).
        self.yank_on_ins: int | None = None

    def _on_command(self, apdu: bytes) -> bool:
        return self.yank_on_ins is None or apdu[1] != self.yank_on_ins

    def insert(self, profile: CardProfile | None = None) -> PivApplet:
        """Put a card (P-256 test profile by default) in; returns once pcscd sees it."""
        self.remove()
        applet = PivApplet(profile or make_test_profile(KeyAlgorithm.P256))
        self.client = VpcdCardClient(applet, port=VPCD_PORT, on_command=self._on_command)
        self.client.start()
        if not self.client.wait_inserted(timeout=15):
            raise AssertionError(f"vpcd never asked for the card's ATR on port {VPCD_PORT}")
        if not wait_for(reader_has_card, timeout=10):
            raise AssertionError(f"pcscd does not see the card in {READER!r}")
        return applet

    def remove(self) -> None:
        """Take the card out; returns once pcscd sees the reader empty."""
        self.yank_on_ins = None
        if self.client is not None:
            self.client.stop()
            self.client = None
        if not wait_for(lambda: not reader_has_card(), timeout=10):
            raise AssertionError(f"pcscd still sees a card in {READER!r}")

    @property
    def applet(self) -> PivApplet:
        """The card in the reader."""
        assert self.client is not None, "no card inserted"
        return self.client.applet

    @property
    def commands(self) -> int:
        """APDUs the card has answered since it was inserted."""
        assert self.client is not None, "no card inserted"
        return self.client.counters.commands


class QuietSource:
    """A reader source that never reports a change (for agents whose card is a fake)."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def wait(self, timeout: float) -> list[ReaderInfo]:
        self.stop.wait(timeout)
        return []

    def cancel(self) -> None:
        self.stop.set()

    def close(self) -> None:
        pass


@dataclass
class Reply:
    """An HTTP response, its body parsed when it is JSON."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def call(
    port: int,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    origin: str | None = ORIGIN,
    host: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One request with explicit headers (http.client adds nothing we did not ask for)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        if origin is not None:
            connection.putheader("Origin", origin)
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if payload is not None and not any(k.lower() == "content-type" for k, _ in headers or []):
            connection.putheader("Content-Type", "application/json")
        if payload is not None and not any(
            k.lower() in ("content-length", "transfer-encoding") for k, _ in headers or []
        ):
            connection.putheader("Content-Length", str(len(payload)))
        for name, value in headers or []:
            connection.putheader(name, value)
        connection.endheaders(payload)
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


class EventStream:
    """A `GET /v1/events` reader on a raw socket, parsing SSE messages as they come."""

    def __init__(self, port: int, origin: str = ORIGIN) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        request = (
            f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode("ascii"))
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n", timeout=5)
        self.status_line, *lines = head.decode("latin-1").split("\r\n")
        self.headers = dict(line.split(": ", 1) for line in lines if line)
        self.comments: list[str] = []

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} within {timeout} s")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the agent closed the event stream")
            self.buffer += chunk
        item, self.buffer = self.buffer.split(marker, 1)
        return item

    def next_event(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        """The next named event (comments and `retry:` are recorded and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            block = self._read_until(b"\n\n", max(0.01, deadline - time.monotonic()))
            fields: dict[str, str] = {}
            for line in block.decode("utf-8").split("\n"):
                if line.startswith(":"):
                    self.comments.append(line)
                elif ": " in line:
                    name, value = line.split(": ", 1)
                    fields[name] = value
            if "event" in fields:
                return fields["event"], json.loads(fields["data"])

    def next_comment(self, timeout: float = 5.0) -> str:
        """The next comment line (the agent's keep-alive)."""
        deadline = time.monotonic() + timeout
        while not self.comments:
            block = self._read_until(b"\n\n", max(0.01, deadline - time.monotonic()))
            self.comments += [x for x in block.decode("utf-8").split("\n") if x.startswith(":")]
        return self.comments.pop(0)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Broker:
    """A stand-in broker on 127.0.0.1 that records `POST /card/removed` bodies."""

    server: ThreadingHTTPServer
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, count: int, timeout: float = 5.0) -> bool:
        return wait_for(lambda: len(self.received) >= count, timeout)


def start_broker(answer: Callable[[int], int] = lambda n: 204) -> Broker:
    """Run a stand-in broker; `answer(n)` gives the status for the n-th notice (from 1)."""
    broker: Broker

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = answer(len(broker.statuses) + 1)
            broker.statuses.append(status)
            if self.path == "/card/removed" and status == 204:
                broker.received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    broker = Broker(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return broker
