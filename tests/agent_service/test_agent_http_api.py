"""The HTTP layer over an in-process card (no PC/SC): preflights, the connection cap,
malformed requests, status while busy, and what the PIN prompt is told."""

from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest
from agent_fakes import KeyAlgorithm, VirtualReader, make_test_profile
from agent_service_support import ORIGIN, QuietSource, call, new_challenge

from careid_agent.card import PinRequest
from careid_agent.config import Overrides, parse_config
from careid_agent.http_api import http_status
from careid_agent.pin import PinEntry
from careid_agent.serve import Agent
from careid_agent.transport import ReaderInfo
from careid_protocol.errors import ErrorCode
from careid_protocol.token import verify_token


class Pins:
    def __init__(self, pin: str = "246810", hold: threading.Event | None = None) -> None:
        self.pin = pin
        self.hold = hold
        self.requests: list[PinRequest] = []
        self.entered = threading.Event()

    def __call__(self, request: PinRequest) -> bytearray:
        self.requests.append(request)
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(10)
        if self.pin == "crash":
            raise RuntimeError("a bug")
        return bytearray(self.pin.encode())


@pytest.fixture
def card() -> VirtualReader:
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    return reader


def _start(card: VirtualReader, pins: Pins, **settings: object) -> Agent:
    def list_readers() -> list[ReaderInfo]:
        atr = card.card.atr if card.card is not None else b""
        return [
            ReaderInfo(name=card.name, card_present=bool(atr), atr=atr, event_count=card.events)
        ]

    config = parse_config(
        {"allowed_origins": [ORIGIN], "pin_provider": "dialog"} | settings,
        overrides=Overrides(port=0, dev=True),
    )
    agent = Agent(
        config,
        connect=card.connect,
        list_readers=list_readers,
        reader_source=QuietSource(),
        pin_entry=PinEntry(provider=pins, pin_pad=None),
    )
    agent.start()
    return agent


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.stop()


def test_preflights(card: VirtualReader, agents: list[Agent]) -> None:
    agent = _start(card, Pins())
    agents.append(agent)
    port = agent.server.port
    asked = [
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ]
    plain = call(port, "OPTIONS", "/v1/authenticate", headers=asked)
    assert plain.status == 204 and plain.body == b""
    assert plain.header("Access-Control-Allow-Origin") == ORIGIN
    assert plain.header("Access-Control-Allow-Headers") == "Content-Type"
    assert plain.header("Access-Control-Allow-Private-Network") is None
    pna = call(
        port,
        "OPTIONS",
        "/v1/authenticate",
        headers=[*asked, ("Access-Control-Request-Private-Network", "true")],
    )
    assert pna.header("Access-Control-Allow-Private-Network") == "true"
    foreign = call(
        port,
        "OPTIONS",
        "/v1/authenticate",
        origin="https://phish.example.org",
        headers=[*asked, ("Access-Control-Request-Private-Network", "true")],
    )
    assert (foreign.status, foreign.json["error"]) == (403, "origin_not_allowed")
    assert foreign.header("Access-Control-Allow-Origin") is None
    assert foreign.header("Access-Control-Allow-Private-Network") is None
    rebound = call(port, "OPTIONS", "/v1/authenticate", host=f"evil.example:{port}", headers=asked)
    assert (rebound.status, rebound.json["error"]) == (403, "host_not_allowed")
    assert card.connections == []  # no preflight touches the card


def test_sign_in_over_http_names_the_origin_to_the_pin_prompt(
    card: VirtualReader, agents: list[Agent]
) -> None:
    pins = Pins()
    agent = _start(card, pins)
    agents.append(agent)
    challenge = new_challenge()
    reply = call(
        agent.server.port,
        "POST",
        "/v1/authenticate",
        body={"challenge": challenge},
        host=f"localhost:{agent.server.port}",
    )
    assert reply.status == 200, reply.body
    verify_token(reply.json, ORIGIN, challenge)
    assert [r.requester for r in pins.requests] == [ORIGIN]
    assert reply.header("Server") == "careid-agent"  # no version for scanners to match
    assert reply.header("Cache-Control") == "no-store"


def test_status_does_not_wait_behind_a_pin_prompt(card: VirtualReader, agents: list[Agent]) -> None:
    release = threading.Event()
    pins = Pins(hold=release)
    agent = _start(card, pins)
    agents.append(agent)
    port = agent.server.port
    signing = threading.Thread(
        target=call,
        args=(port, "POST", "/v1/authenticate"),
        kwargs={"body": {"challenge": new_challenge()}},
    )
    signing.start()
    try:
        assert pins.entered.wait(5)
        started = time.monotonic()
        status = call(port, "GET", "/v1/status").json
        assert time.monotonic() - started < 3
        assert status["cardBusy"] is True and status["cardPresent"] is True
        assert status["card"] is None
    finally:
        release.set()
        signing.join(10)
    assert call(port, "GET", "/v1/status").json["card"]["holderName"] == "Alex Morgan"


def test_a_bug_is_a_plain_500_the_page_can_read(card: VirtualReader, agents: list[Agent]) -> None:
    agent = _start(card, Pins("crash"))
    agents.append(agent)
    reply = call(agent.server.port, "POST", "/v1/authenticate", body={"challenge": new_challenge()})
    assert (reply.status, reply.json["error"]) == (500, "agent_internal")
    assert reply.header("Access-Control-Allow-Origin") == ORIGIN


def test_malformed_requests_and_other_methods(card: VirtualReader, agents: list[Agent]) -> None:
    agent = _start(card, Pins())
    agents.append(agent)
    port = agent.server.port
    assert call(port, "HEAD", "/v1/status").status == 405
    assert call(port, "DELETE", "/v1/status").json["error"] == "method_not_allowed"
    get_with_body = call(port, "GET", "/v1/status", raw=b"{}")
    assert get_with_body.json["error"] == "bad_request"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the agent closes after a refusal
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.0 400")
    assert b'"error": "bad_request"' in answer


def test_connections_are_capped(card: VirtualReader, agents: list[Agent]) -> None:
    agent = _start(card, Pins())
    agents.append(agent)
    agent.server._slots = threading.BoundedSemaphore(1)  # noqa: SLF001 - a cap of one
    port = agent.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as begun:
        begun.sendall(b"GET /v1/status HTTP/1.1\r\n")  # a request under way
        time.sleep(0.2)  # it holds the only slot
        with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
            second.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
            answer = b""
            while chunk := second.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"agent_busy" in answer
        begun.close()
    assert _eventually_ok(port)


def test_silent_connections_never_shut_out_a_request(
    card: VirtualReader, agents: list[Agent]
) -> None:
    """Any web page can make the browser preconnect to localhost names: connections that
    never send a request. They take no slot, are closed when silent too long, and the
    longest-waiting make room when too many wait, so an allowed page is still served."""
    agent = _start(card, Pins())
    agents.append(agent)
    server = agent.server
    server._slots = threading.BoundedSemaphore(2)  # noqa: SLF001 - fewer slots than the flood
    server._max_waiting = 8  # noqa: SLF001 - and fewer waiting places
    port = server.port
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            assert call(port, "GET", "/v1/status").status == 200
        # The twelve that waited longest were closed to make room.
        closed = 0
        for sock in silent[:12]:
            sock.settimeout(2)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == 12
    finally:
        for sock in silent:
            sock.close()


def test_a_connection_silent_past_its_time_is_closed(
    card: VirtualReader, agents: list[Agent]
) -> None:
    agent = _start(card, Pins())
    agents.append(agent)
    agent.server._first_byte_timeout = 0.3  # noqa: SLF001 - shorter than the default 2 s
    with socket.create_connection(("127.0.0.1", agent.server.port), timeout=5) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the agent, nothing answered
        assert time.monotonic() - started < 3


def _eventually_ok(port: int) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if call(port, "GET", "/v1/status").status == 200:
            return True
        time.sleep(0.1)
    return False


def test_http_statuses_for_codes() -> None:
    assert http_status(ErrorCode.WRONG_PIN) == 403
    assert http_status(ErrorCode.NO_CARD) == 409
    assert http_status(ErrorCode.CARD_BUSY) == 503
    assert http_status(ErrorCode.BODY_TOO_LARGE) == 413
    assert http_status(ErrorCode.AGENT_INTERNAL) == 500
    assert http_status(ErrorCode.CARD_COMMUNICATION) == 502


def test_replies_are_not_held_back_by_nagle(card: VirtualReader, agents: list[Agent]) -> None:
    # Headers and body leave in two writes; without TCP_NODELAY the body waits for the
    # client's delayed ACK, ~40 ms on Linux, on every request of a kept-alive connection.
    agent = _start(card, Pins())
    agents.append(agent)
    port = agent.server.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": f"127.0.0.1:{port}", "Origin": ORIGIN}
    timings = []
    try:
        for _ in range(7):
            started = time.perf_counter()
            connection.request("GET", "/v1/status", headers=headers)
            response = connection.getresponse()
            response.read()
            timings.append(time.perf_counter() - started)
            assert response.status == 200
    finally:
        connection.close()
    assert statistics.median(timings[1:]) < 0.025, timings


def test_deeply_nested_json_is_a_plain_bad_request(
    card: VirtualReader, agents: list[Agent]
) -> None:
    agent = _start(card, Pins())
    agents.append(agent)
    port = agent.server.port
    for path in ("/v1/authenticate", "/v1/card-sessions"):
        reply = call(
            port,
            "POST",
            path,
            raw=b"[" * 2000 + b"]" * 2000,
            headers=[("Content-Type", "application/json")],
        )
        assert (reply.status, reply.json["error"]) == (400, "bad_request"), path
