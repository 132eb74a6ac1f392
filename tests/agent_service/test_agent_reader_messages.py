"""What a sign-in page is told when no reader can be used, and what the log keeps for IT
support: the agent over the real transport, with a fake `smartcard.scard` under it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

import pytest
from agent_fakes import FakeScard
from agent_service_support import ORIGIN, QuietSource, call, new_challenge
from smartcard import scard

from careid_agent import transport
from careid_agent.config import Overrides, parse_config
from careid_agent.pin import PinEntry
from careid_agent.serve import Agent

StartAgent = Callable[..., Agent]

PRESENT = scard.SCARD_STATE_PRESENT | (3 << 16)
EMPTY = scard.SCARD_STATE_EMPTY


def _two_virtual_readers() -> FakeScard:
    return FakeScard(
        {
            "Virtual PCD 00 00": (PRESENT, [0x3B, 0x81, 0x01, 0x80, 0x00]),
            "Virtual PCD 00 01": (EMPTY, []),
        }
    )


def _pcscd_down() -> FakeScard:
    api = _two_virtual_readers()
    api.establish_rv = scard.SCARD_E_NO_SERVICE
    return api


@pytest.fixture
def start() -> Iterator[StartAgent]:
    agents: list[Agent] = []

    def run(api: FakeScard, reader: str | None = None) -> Agent:
        settings = {"allowed_origins": [ORIGIN], "pin_provider": "dialog"}
        config = parse_config(
            settings | ({"reader": reader} if reader else {}),
            overrides=Overrides(port=0, dev=True),
        )
        agent = Agent(
            config,
            connect=functools.partial(transport.connect, config.reader, api=api),
            list_readers=functools.partial(transport.scan_readers, api=api),
            reader_source=QuietSource(),
            pin_entry=PinEntry(provider=lambda request: bytearray(b"246810"), pin_pad=None),
        )
        agents.append(agent)
        agent.start()
        return agent

    yield run
    for agent in agents:
        agent.stop()


def _plain(message: str) -> None:
    # A clinician reads this on the sign-in page: no command, no PC/SC jargon.
    for hint in ("careid-agent", "PC/SC", "pcscd", "reader's name", "0x"):
        assert hint not in message
    assert "IT support" in message


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_status_with_pcscd_down_asks_for_it_support_and_logs_why_once(
    start: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="careid_agent")
    agent = start(_pcscd_down())
    for _ in range(3):  # pages poll
        reply = call(agent.server.port, "GET", "/v1/status")
        assert reply.status == 200
        assert reply.json["cardError"]["error"] == "no_reader"
        assert "plugged in" not in reply.json["cardError"]["message"]
        _plain(reply.json["cardError"]["message"])
    logged = [w for w in _warnings(caplog) if "0x8010001D" in w]
    assert len(logged) == 1, _warnings(caplog)
    assert "pcscd" in logged[0] and "not running" in logged[0]


def test_authenticate_with_pcscd_down(start: StartAgent, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="careid_agent")
    agent = start(_pcscd_down())
    reply = call(agent.server.port, "POST", "/v1/authenticate", body={"challenge": new_challenge()})
    assert (reply.status, reply.json["error"]) == (409, "no_reader")
    assert "plugged in" not in reply.json["message"]
    _plain(reply.json["message"])
    assert set(reply.json) == {"error", "message"}  # the detail stays in the agent
    assert any("/v1/authenticate" in w and "pcscd" in w for w in _warnings(caplog))


def test_a_reader_setting_matching_several_readers(
    start: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="careid_agent")
    agent = start(_two_virtual_readers(), reader="Virtual PCD")
    reply = call(agent.server.port, "POST", "/v1/authenticate", body={"challenge": new_challenge()})
    assert (reply.status, reply.json["error"]) == (409, "no_reader")
    _plain(reply.json["message"])
    logged = next(w for w in _warnings(caplog) if "/v1/authenticate" in w)
    assert "2 readers match the reader setting 'Virtual PCD'" in logged
    assert "'Virtual PCD 00 00', 'Virtual PCD 00 01'" in logged

    status = call(agent.server.port, "GET", "/v1/status").json
    assert status["cardError"]["error"] == "no_reader"
    _plain(status["cardError"]["message"])


def test_a_reader_setting_naming_no_reader(
    start: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="careid_agent")
    agent = start(_two_virtual_readers(), reader="Omnikey")
    status = call(agent.server.port, "GET", "/v1/status").json
    assert status["cardError"]["error"] == "no_reader"
    assert status["readers"] == []
    _plain(status["cardError"]["message"])
    logged = next(w for w in _warnings(caplog) if "'Omnikey'" in w)
    assert "'Virtual PCD 00 00', 'Virtual PCD 00 01'" in logged

    reply = call(agent.server.port, "POST", "/v1/authenticate", body={"challenge": new_challenge()})
    assert (reply.status, reply.json["error"]) == (409, "no_reader")
    assert reply.json["message"] == status["cardError"]["message"]


def test_status_logs_again_only_when_the_problem_changes(
    start: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="careid_agent")
    api = _pcscd_down()
    agent = start(api)
    call(agent.server.port, "GET", "/v1/status")
    api.establish_rv = scard.SCARD_S_SUCCESS  # pcscd is back
    assert call(agent.server.port, "GET", "/v1/status").json["cardPresent"] is True
    api.readers.clear()  # and every reader unplugged
    for _ in range(2):
        reply = call(agent.server.port, "GET", "/v1/status").json
        assert "plugged in" in reply["cardError"]["message"]
    warnings = [w for w in _warnings(caplog) if "no smartcard reader can be used" in w]
    assert len(warnings) == 2 and "lists no reader" in warnings[1]
    assert any("can be used again" in r.getMessage() for r in caplog.records)
