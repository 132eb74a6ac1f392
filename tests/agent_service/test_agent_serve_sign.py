"""`POST /v1/authenticate` through the real PC/SC stack: agent → pyscard → pcscd → vpcd →
the virtual card in reader 00 01, with the env PIN provider."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from agent_service_support import (
    ORIGIN,
    PIN,
    READER,
    CardSlot,
    KeyAlgorithm,
    Reply,
    call,
    make_test_profile,
    new_challenge,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from careid_agent import transport
from careid_agent.card import PinRequest
from careid_agent.pin import EnvPinProvider, PinEntry
from careid_agent.pinpad import ReaderPinPad
from careid_protocol.token import ProtocolError, verify_token
from conftest import StartAgent

pytestmark = pytest.mark.pcsc


def authenticate(port: int, challenge: str, origin: str = ORIGIN) -> Reply:
    return call(port, "POST", "/v1/authenticate", body={"challenge": challenge}, origin=origin)


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [(KeyAlgorithm.P256, "ES256"), (KeyAlgorithm.P384, "ES384"), (KeyAlgorithm.RSA2048, "RS256")],
)
def test_the_token_verifies_for_each_key_type(
    slot: CardSlot, start_agent: StartAgent, key: KeyAlgorithm, algorithm: str
) -> None:
    profile = make_test_profile(key)
    slot.insert(profile)
    agent = start_agent()
    challenge = new_challenge()
    reply = authenticate(agent.server.port, challenge)
    assert reply.status == 200, reply.body
    token = reply.json
    assert set(token) == {"format", "certificate", "algorithm", "signature", "agentVersion"}
    assert token["format"] == "careid-auth:1" and token["algorithm"] == algorithm
    assert token["agentVersion"].startswith("careid-agent/")
    assert reply.header("Access-Control-Allow-Origin") == ORIGIN
    certificate = verify_token(token, ORIGIN, challenge)
    expected = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
    assert certificate.public_bytes(Encoding.DER) == expected.public_bytes(Encoding.DER)
    # The signature is bound to the origin and the challenge: neither can be swapped.
    with pytest.raises(ProtocolError):
        verify_token(token, "https://phish.example.org", challenge)
    with pytest.raises(ProtocolError):
        verify_token(token, ORIGIN, new_challenge())
    status = call(agent.server.port, "GET", "/v1/status").json
    assert status["card"]["algorithm"] == algorithm and status["card"]["reader"] == READER


GOOD = {"challenge": "A" * 43}
DUPLICATE = b'{"challenge":"x","challenge":"' + b"A" * 43 + b'"}'

# (what, request options, HTTP status, code, whether the page may read the refusal)
REFUSALS: list[tuple[str, dict[str, object], int, str, bool]] = [
    ("foreign origin", {"origin": "https://phish.example.org"}, 403, "origin_not_allowed", False),
    ("no origin", {"origin": None}, 403, "origin_not_allowed", False),
    ("opaque origin", {"origin": "null"}, 403, "origin_not_allowed", False),
    ("origin with a slash", {"origin": ORIGIN + "/"}, 403, "origin_not_allowed", False),
    ("two origins", {"headers": [("Origin", ORIGIN)]}, 403, "origin_not_allowed", False),
    ("rebinding host", {"host": "attacker.example:47600"}, 403, "host_not_allowed", False),
    ("host, other port", {"host": "127.0.0.1:1"}, 403, "host_not_allowed", False),
    ("short challenge", {"body": {"challenge": "A" * 42}}, 400, "invalid_challenge", True),
    ("long challenge", {"body": {"challenge": "A" * 44}}, 400, "invalid_challenge", True),
    ("padded", {"body": {"challenge": "A" * 42 + "="}}, 400, "invalid_challenge", True),
    ("base64, not url", {"body": {"challenge": "A" * 42 + "+"}}, 400, "invalid_challenge", True),
    ("spare bits set", {"body": {"challenge": "A" * 42 + "B"}}, 400, "invalid_challenge", True),
    ("a number", {"body": {"challenge": 7}}, 400, "invalid_challenge", True),
    ("extra member", {"body": GOOD | {"origin": ORIGIN}}, 400, "bad_request", True),
    ("not an object", {"body": ["A" * 43]}, 400, "bad_request", True),
    ("duplicate member", {"raw": DUPLICATE}, 400, "bad_request", True),
    ("not JSON", {"raw": b"challenge=" + b"A" * 43}, 400, "bad_request", True),
    ("text/plain", {"headers": [("Content-Type", "text/plain")]}, 400, "bad_request", True),
    ("oversized", {"raw": b'{"challenge":"' + b"A" * 5000 + b'"}'}, 413, "body_too_large", True),
    ("chunked", {"headers": [("Transfer-Encoding", "chunked")]}, 400, "bad_request", True),
]


def test_refusals_never_touch_the_card(slot: CardSlot, start_agent: StartAgent) -> None:
    applet = slot.insert()
    agent = start_agent()
    port = agent.server.port
    before = slot.commands
    for name, options, status, code, readable in REFUSALS:
        reply = call(port, "POST", "/v1/authenticate", **({"body": GOOD} | options))  # type: ignore[arg-type]
        assert (reply.status, reply.json["error"]) == (status, code), name
        assert reply.json["message"].endswith("."), name
        # Only an allowed origin may read a refusal (to show its message).
        expected = ORIGIN if readable else None
        assert reply.header("Access-Control-Allow-Origin") == expected, name
    assert call(port, "GET", "/v1/authenticate").json["error"] == "method_not_allowed"
    assert call(port, "GET", "/v1/nothing").json["error"] == "not_found"
    # Not one APDU reached the card, so no PIN try can have been used.
    assert slot.commands == before
    assert applet.profile.pin_retries_left == 3
    assert call(port, "GET", "/v1/status").json["card"]["pinTriesLeft"] == 3


def test_wrong_pin_reports_tries_left_then_the_card_blocks(
    slot: CardSlot, start_agent: StartAgent
) -> None:
    slot.insert()
    environ = {"CAREID_AGENT_PIN": "111111"}
    port = start_agent(environ=environ).server.port
    first = authenticate(port, new_challenge())
    assert (first.status, first.json["error"], first.json["triesLeft"]) == (403, "wrong_pin", 2)
    assert "2 tries left" in first.json["message"]
    assert first.header("Access-Control-Allow-Origin") == ORIGIN
    assert authenticate(port, new_challenge()).json["triesLeft"] == 1
    last = authenticate(port, new_challenge())
    assert (last.json["error"], last.json["triesLeft"]) == ("pin_blocked", 0)
    environ["CAREID_AGENT_PIN"] = PIN  # the right PIN is too late now
    again = authenticate(port, new_challenge())
    assert (again.status, again.json["error"]) == (403, "pin_blocked")
    status = call(port, "GET", "/v1/status").json
    assert status["card"]["pinBlocked"] is True and status["card"]["pinTriesLeft"] == 0


def test_a_card_inserted_blocked_is_refused(slot: CardSlot, start_agent: StartAgent) -> None:
    blocked = dataclasses.replace(make_test_profile(KeyAlgorithm.P256), pin_retries_left=0)
    slot.insert(blocked)
    reply = authenticate(start_agent().server.port, new_challenge())
    assert (reply.status, reply.json["error"]) == (403, "pin_blocked")


def test_card_removed_while_signing(slot: CardSlot, start_agent: StartAgent) -> None:
    slot.insert()
    port = start_agent().server.port
    assert call(port, "GET", "/v1/status").json["cardPresent"] is True  # identity cached
    slot.yank_on_ins = 0x87  # pulled out as GENERAL AUTHENTICATE arrives
    reply = authenticate(port, new_challenge())
    assert (reply.status, reply.json["error"]) == (409, "card_removed")
    assert "removed" in reply.json["message"]


@pytest.mark.parametrize(
    ("algorithm", "ins"),
    [
        (KeyAlgorithm.P256, 0x20),  # as VERIFY (the PIN) arrives
        (KeyAlgorithm.P256, 0x87),  # as GENERAL AUTHENTICATE arrives
        (KeyAlgorithm.RSA2048, 0x87),  # between the chained GENERAL AUTHENTICATE blocks
        (KeyAlgorithm.RSA2048, 0xC0),  # as GET RESPONSE fetches the signature
    ],
)
def test_a_card_pulled_at_any_point_of_the_signature_is_card_removed(
    slot: CardSlot, start_agent: StartAgent, algorithm: KeyAlgorithm, ins: int
) -> None:
    slot.insert(make_test_profile(algorithm))
    port = start_agent().server.port
    assert call(port, "GET", "/v1/status").json["cardPresent"] is True
    slot.yank_on_ins = ins
    reply = authenticate(port, new_challenge())
    assert (reply.status, reply.json["error"]) == (409, "card_removed")


def test_no_card(slot: CardSlot, start_agent: StartAgent) -> None:
    slot.remove()
    port = start_agent().server.port
    reply = authenticate(port, new_challenge())
    assert (reply.status, reply.json["error"]) == (409, "no_card")
    status = call(port, "GET", "/v1/status").json
    assert status["cardPresent"] is False and status["card"] is None
    assert status["cardError"]["error"] == "no_card"
    assert status["readers"] == [{"name": READER, "cardPresent": False}]


def _concurrently(port: int, count: int) -> list[tuple[str, Reply]]:
    results: list[tuple[str, Reply]] = []
    barrier = threading.Barrier(count)

    def one() -> None:
        challenge = new_challenge()
        barrier.wait()
        results.append((challenge, authenticate(port, challenge)))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_requests_take_turns(slot: CardSlot, start_agent: StartAgent) -> None:
    slot.insert()
    results = _concurrently(start_agent().server.port, 2)
    assert [reply.status for _, reply in results] == [200, 200]
    for challenge, reply in results:
        verify_token(reply.json, ORIGIN, challenge)


class SlowPin:
    """The env provider, but the person takes a while to type."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.env = EnvPinProvider({"CAREID_AGENT_PIN": PIN})

    def __call__(self, request: PinRequest) -> bytearray:
        time.sleep(self.seconds)
        return self.env(request)


def test_a_request_waiting_too_long_gets_card_busy(slot: CardSlot, start_agent: StartAgent) -> None:
    slot.insert()
    agent = start_agent(
        pin_entry=PinEntry(provider=SlowPin(1.0), pin_pad=None), card_wait_seconds=0.2
    )
    results = _concurrently(agent.server.port, 2)
    by_status = {reply.status: (challenge, reply) for challenge, reply in results}
    assert sorted(by_status) == [200, 503]
    challenge, signed = by_status[200]
    verify_token(signed.json, ORIGIN, challenge)
    busy = by_status[503][1]
    assert busy.json["error"] == "card_busy" and busy.header("Retry-After") == "1"
    assert busy.header("Access-Control-Allow-Origin") == ORIGIN


def test_the_virtual_reader_offers_no_pin_pad(slot: CardSlot) -> None:
    # vpcd answers no Part 10 features: the `auto` PIN entry must see no PIN pad there
    # and fall back to asking on the computer (the PIN-pad path is tested with a fake).
    slot.insert()
    connection = transport.connect(READER)
    try:
        pad = ReaderPinPad()
        assert pad.features(connection) == {}
        assert not pad.available(connection)
    finally:
        connection.close()
