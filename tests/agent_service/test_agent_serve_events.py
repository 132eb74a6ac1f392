"""`GET /v1/events` and card sessions through the real PC/SC stack: the watcher sees the
virtual card go in and out of reader 00 01, and a card session is reported ended to a
stand-in broker on 127.0.0.1 when its card leaves."""

from __future__ import annotations

import pytest
from agent_service_support import (
    ORIGIN,
    PIN,
    READER,
    CardSlot,
    EventStream,
    call,
    new_challenge,
    start_broker,
    wait_for,
)

from careid_agent.card import PinRequest
from careid_agent.pin import EnvPinProvider, PinEntry
from careid_protocol.token import verify_token
from conftest import StartAgent

pytestmark = pytest.mark.pcsc

SESSION = "cs_" + "k3J9xQ2mZ7pL4vN8wR1tY6uB5eH0aD3f"


def test_events_see_the_card_go_in_and_out(slot: CardSlot, start_agent: StartAgent) -> None:
    slot.remove()
    agent = start_agent(event_keepalive_seconds=1)
    stream = EventStream(agent.server.port)
    try:
        assert stream.status_line == "HTTP/1.1 200 OK"
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["Access-Control-Allow-Origin"] == ORIGIN
        slot.insert()
        name, data = stream.next_event(timeout=5)
        assert (name, data["reader"]) == ("card-inserted", READER)
        assert data["at"].endswith("Z")
        slot.remove()
        name, data = stream.next_event(timeout=5)
        assert (name, data["reader"]) == ("card-removed", READER)
        assert stream.next_comment(timeout=3) == ": keep-alive"
    finally:
        stream.close()
    # A stream opened with a card already in starts by saying so.
    slot.insert()
    late = EventStream(agent.server.port)
    try:
        name, data = late.next_event(timeout=5)
        assert (name, data["reader"], data["initial"]) == ("card-inserted", READER, True)
    finally:
        late.close()


def test_event_streams_are_refused_to_others_and_capped(
    slot: CardSlot, start_agent: StartAgent
) -> None:
    agent = start_agent(max_event_streams=1)
    port = agent.server.port
    foreign = EventStream(port, origin="https://phish.example.org")
    assert foreign.status_line.startswith("HTTP/1.1 403")
    foreign.close()
    first = EventStream(port)
    try:
        assert first.status_line == "HTTP/1.1 200 OK"
        second = call(port, "GET", "/v1/events")
        assert (second.status, second.json["error"]) == (503, "agent_busy")
    finally:
        first.close()
    # Once the page goes away its slot is free again.
    assert wait_for(lambda: agent.hub.subscriber_count == 0, timeout=5)


def test_a_card_session_ends_when_its_card_leaves(slot: CardSlot, start_agent: StartAgent) -> None:
    broker = start_broker()
    try:
        slot.insert()
        agent = start_agent(allowed_origins=[ORIGIN, broker.origin])
        port = agent.server.port
        signed = call(
            port,
            "POST",
            "/v1/authenticate",
            body={"challenge": new_challenge()},
            origin=broker.origin,
        )
        assert signed.status == 200
        reply = call(
            port, "POST", "/v1/card-sessions", body={"cardSession": SESSION}, origin=broker.origin
        )
        assert (reply.status, reply.json) == (201, {"cardSession": SESSION, "reader": READER})
        assert reply.header("Access-Control-Allow-Origin") == broker.origin
        # Bad references and foreign pages are refused; nothing is kept for them.
        for bad in ["short", "x" * 257, "has space in it!!", 42, None]:
            refused = call(port, "POST", "/v1/card-sessions", body={"cardSession": bad})
            assert (refused.status, refused.json["error"]) == (400, "invalid_card_session"), bad
        foreign = call(
            port,
            "POST",
            "/v1/card-sessions",
            body={"cardSession": SESSION},
            origin="https://phish.example.org",
        )
        assert foreign.json["error"] == "origin_not_allowed"
        assert agent.sessions.count() == 1
        assert broker.received == []
        slot.remove()
        assert broker.wait(1, timeout=5), "the broker was not told the card left"
        assert broker.received == [{"cardSession": SESSION}]
        assert agent.sessions.count() == 0
    finally:
        broker.server.shutdown()
        broker.server.server_close()


def test_a_card_session_belongs_to_the_card_that_signed_not_the_one_in_the_reader_now(
    slot: CardSlot, start_agent: StartAgent
) -> None:
    broker = start_broker()
    try:
        slot.insert()
        agent = start_agent(allowed_origins=[broker.origin])
        port = agent.server.port
        body = {"challenge": new_challenge()}
        assert call(port, "POST", "/v1/authenticate", body=body, origin=broker.origin).status == 200
        # The card that signed leaves and another insertion takes its place before the
        # page hands the session over (another person's card, a shared workstation).
        slot.remove()
        assert wait_for(lambda: not agent.watcher.cards(), timeout=5)
        slot.insert()
        assert wait_for(lambda: bool(agent.watcher.cards()), timeout=5)
        late = call(
            port, "POST", "/v1/card-sessions", body={"cardSession": SESSION}, origin=broker.origin
        )
        assert (late.status, late.json["error"]) == (409, "card_removed")
        assert broker.wait(1, timeout=5), "the broker was not told the session must end"
        assert agent.sessions.count() == 0
        # The card now in the reader signs, and its session is kept until it leaves.
        body = {"challenge": new_challenge()}
        assert call(port, "POST", "/v1/authenticate", body=body, origin=broker.origin).status == 200
        kept = call(
            port, "POST", "/v1/card-sessions", body={"cardSession": SESSION}, origin=broker.origin
        )
        assert kept.status == 201 and agent.sessions.count() == 1
    finally:
        broker.server.shutdown()
        broker.server.server_close()


def test_a_session_registered_with_no_card_ends_at_once(
    slot: CardSlot, start_agent: StartAgent
) -> None:
    # A busy broker first (503), then it takes the notice: the agent retries.
    broker = start_broker(answer=lambda n: 503 if n == 1 else 204)
    try:
        slot.remove()
        agent = start_agent(allowed_origins=[broker.origin])
        reply = call(
            agent.server.port,
            "POST",
            "/v1/card-sessions",
            body={"cardSession": SESSION},
            origin=broker.origin,
        )
        assert (reply.status, reply.json["error"]) == (409, "no_card")
        assert broker.wait(1, timeout=5)
        assert broker.received == [{"cardSession": SESSION}] and broker.statuses == [503, 204]
    finally:
        broker.server.shutdown()
        broker.server.server_close()


class CountingPin:
    """The env provider, counting how often the PIN is asked for."""

    def __init__(self) -> None:
        self.env = EnvPinProvider({"CAREID_AGENT_PIN": PIN})
        self.asked = 0

    def __call__(self, request: PinRequest) -> bytearray:
        self.asked += 1
        return self.env(request)


def test_once_per_insertion_asks_again_after_the_card_comes_back(
    slot: CardSlot, start_agent: StartAgent
) -> None:
    slot.insert()
    pins = CountingPin()
    agent = start_agent(
        pin_policy="once-per-insertion", pin_entry=PinEntry(provider=pins, pin_pad=None)
    )
    port = agent.server.port
    for _ in range(3):
        challenge = new_challenge()
        reply = call(port, "POST", "/v1/authenticate", body={"challenge": challenge})
        verify_token(reply.json, ORIGIN, challenge)
    assert pins.asked == 1  # tap and go: the card stays verified while it stays in
    stream = EventStream(port)
    try:
        stream.next_event()  # the card already in
        slot.remove()
        assert stream.next_event()[0] == "card-removed"  # the watcher has forgotten it
        slot.insert()
        assert stream.next_event()[0] == "card-inserted"
    finally:
        stream.close()
    challenge = new_challenge()
    reply = call(port, "POST", "/v1/authenticate", body={"challenge": challenge})
    verify_token(reply.json, ORIGIN, challenge)
    assert pins.asked == 2
