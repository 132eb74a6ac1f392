"""Refusals the HTTP layer makes on its own (all connections taken, a request
http.server cannot parse, the agent stopping mid-PIN-prompt): each with a code that
matches its status, and CORS for an allowed origin so the page can read it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from agent_fakes import KeyAlgorithm, VirtualReader, make_test_profile
from agent_service_support import ORIGIN, QuietSource, call, new_challenge, wait_for

from careid_agent.card import PinRequest
from careid_agent.config import AgentConfig
from careid_agent.http_api import AgentHTTPServer, LogBudget
from careid_agent.pin import PinEntry
from careid_agent.serve import Agent
from careid_agent.ui_thread import MainThreadRunner


def _agent(**options: object) -> tuple[Agent, VirtualReader]:
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    agent = Agent(
        AgentConfig(port=0, allowed_origins=(ORIGIN,), dev=True),
        connect=reader.connect,
        list_readers=lambda: [reader.info()],
        reader_source=QuietSource(),
        pin_entry=PinEntry(
            provider=options.pop("provider", lambda r: bytearray(b"246810")),  # type: ignore[arg-type]
            pin_pad=None,
        ),
        **options,  # type: ignore[arg-type]
    )
    return agent, reader


@pytest.fixture
def one_slot() -> Iterator[AgentHTTPServer]:
    agent, _ = _agent()
    server = AgentHTTPServer(
        0, service=agent.service, hub=agent.hub, allowed_origins=(ORIGIN,), max_connections=1
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        agent.server.server_close()  # built with the agent, never started
        agent.notifier.close()


def test_all_connections_taken_is_readable_by_an_allowed_page(one_slot: AgentHTTPServer) -> None:
    # A request begun (its headers not finished) holds the only slot.
    holder = socket.create_connection(("127.0.0.1", one_slot.port))
    try:
        holder.sendall(b"GET /v1/status HTTP/1.1\r\n")
        time.sleep(0.2)
        busy = call(one_slot.port, "GET", "/v1/status")
        assert (busy.status, busy.json["error"]) == (503, "agent_busy")
        assert busy.header("Retry-After") == "1"
        assert busy.header("Access-Control-Allow-Origin") == ORIGIN
        foreign = call(one_slot.port, "GET", "/v1/status", origin="https://phish.example.org")
        assert foreign.status == 503 and foreign.header("Access-Control-Allow-Origin") is None
    finally:
        holder.close()
    # The held connection's thread sees it close and frees the slot (and its socket).
    assert wait_for(lambda: call(one_slot.port, "GET", "/v1/nothing").status == 404)


def _raw(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


@pytest.mark.parametrize(
    ("request_text", "status", "code", "cors"),
    [
        ("PROPFIND /v1/status HTTP/1.1\r\n{h}\r\n", "501", "method_not_allowed", True),
        ("GET /v1/status HTTP/1.1\r\n{h}X: {long}\r\n\r\n", "431", "body_too_large", False),
        (
            "GET /v1/status HTTP/1.1\r\n{h}" + "X: a\r\n" * 200 + "\r\n",
            "431",
            "body_too_large",
            False,
        ),
        ("GET /{long} HTTP/1.1\r\n{h}\r\n", "414", "body_too_large", False),
        ("GET /v1/status HTTP/2.0\r\n{h}\r\n", "505", "bad_request", False),
        ("NONSENSE\r\n\r\n", "400", "bad_request", False),
    ],
    ids=["method", "long-header", "many-headers", "long-uri", "version", "garbage"],
)
def test_requests_http_server_refuses_get_a_code_matching_their_status(
    request_text: str, status: str, code: str, cors: bool
) -> None:
    agent, _ = _agent()
    agent.start()
    try:
        port = agent.server.port
        headers = f"Host: 127.0.0.1:{port}\r\nOrigin: {ORIGIN}\r\n"
        text = request_text.format(h=headers, long="a" * 70000)
        line, answer, body = _raw(port, text.encode("latin-1"))
        assert line.split(" ")[1] == status
        assert f'"error": "{code}"' in body.decode() or f'"error":"{code}"' in body.decode()
        assert (answer.get("Access-Control-Allow-Origin") == ORIGIN) is cors
    finally:
        agent.stop()


def test_the_agent_stopping_during_a_pin_prompt_is_busy_not_a_failure() -> None:
    runner = MainThreadRunner()
    stop = threading.Event()
    hold = threading.Event()
    ui = threading.Thread(target=runner.run_until, args=(stop,), daemon=True)
    ui.start()
    assert wait_for(lambda: runner.running)
    # A dialog already open on the UI thread; this sign-in's prompt waits behind it.
    first = threading.Thread(target=runner.call, args=(hold.wait,), daemon=True)
    first.start()
    asked = threading.Event()

    def provider(request: PinRequest) -> bytearray:
        asked.set()
        return runner.call(lambda: bytearray(b"246810"))

    agent, _ = _agent(provider=provider)
    agent.start()
    try:
        answers: list[object] = []
        signing = threading.Thread(
            target=lambda: answers.append(
                call(
                    agent.server.port,
                    "POST",
                    "/v1/authenticate",
                    body={"challenge": new_challenge()},
                )
            ),
            daemon=True,
        )
        signing.start()
        assert asked.wait(5)
        time.sleep(0.3)  # the prompt is queued behind the open dialog
        stop.set()  # the agent is stopping (Ctrl-C, log-off)
        hold.set()
        signing.join(10)
        (reply,) = answers
        assert (reply.status, reply.json["error"]) == (503, "agent_busy")  # type: ignore[attr-defined]
        assert reply.header("Access-Control-Allow-Origin") == ORIGIN  # type: ignore[attr-defined]
    finally:
        agent.stop()


def test_refusals_of_pages_not_allowed_cannot_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any page can send requests the agent refuses, as fast as it likes; logged each
    time they would rotate the log, and the sign-ins it records, away."""
    agent, _ = _agent()
    server = AgentHTTPServer(0, service=agent.service, hub=agent.hub, allowed_origins=(ORIGIN,))
    now = [0.0]
    server.foreign_refusals = LogBudget(limit=3, window=60.0, clock=lambda: now[0])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    caplog.set_level(logging.INFO, logger="careid_agent.http_api")

    def refusal_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

    try:
        for _ in range(10):
            refused = call(server.port, "GET", "/v1/status", origin="https://phish.example.org")
            assert refused.status == 403
        assert len(refusal_lines()) == 3
        # An allowed page's refusal is always logged.
        assert call(server.port, "GET", "/v1/nothing").status == 404
        assert len(refusal_lines()) == 4
        # The next window's first line says how many were left out.
        now[0] = 61.0
        call(server.port, "GET", "/v1/status", origin="https://phish.example.org")
        assert "7 such refusals left out" in refusal_lines()[-1]
    finally:
        server.shutdown()
        server.server_close()
        agent.server.server_close()  # built with the agent, never started
        agent.notifier.close()
