"""The PC/SC reader monitor against a scripted `smartcard.scard`: the states it feeds back
to SCardGetStatusChange, timeouts, a PC/SC service that goes away, and cancelling; and
the connection's reader control channel (SCardControl) used for PIN pads."""

from __future__ import annotations

from typing import Any

import pytest

scard = pytest.importorskip("smartcard.scard", reason="needs pyscard (the agent extra)")

from careid_agent.errors import CardCommunicationError, NoReaderError  # noqa: E402
from careid_agent.pcsc_monitor import ReaderMonitor  # noqa: E402
from careid_agent.transport import PcscConnection  # noqa: E402

OK: int = scard.SCARD_S_SUCCESS
ATR = [0x3B, 0x81, 0x01, 0x80, 0x00]
PRESENT = scard.SCARD_STATE_PRESENT | scard.SCARD_STATE_CHANGED


class ScriptedScard:
    """pyscard's constants, with the calls the monitor makes scripted per test."""

    def __init__(self) -> None:
        self.readers = ["Virtual PCD 00 01"]
        self.answers: list[tuple[int, list[tuple[str, int, list[int]]]]] = []
        self.queries: list[tuple[int, list[int]]] = []
        self.contexts = 0
        self.released = 0
        self.cancelled: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(scard, name)

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]:  # noqa: N802
        self.contexts += 1
        return OK, 100 + self.contexts

    def SCardReleaseContext(self, context: int) -> int:  # noqa: N802
        self.released += 1
        return OK

    def SCardListReaders(self, context: int, groups: list[str]) -> tuple[int, list[str]]:  # noqa: N802
        if not self.readers:
            return scard.SCARD_E_NO_READERS_AVAILABLE, []
        return OK, list(self.readers)

    def SCardGetStatusChange(  # noqa: N802
        self, context: int, timeout: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        self.queries.append((timeout, [state for _, state in states]))
        return self.answers.pop(0)

    def SCardCancel(self, context: int) -> int:  # noqa: N802
        self.cancelled.append(context)
        return OK

    def SCardGetErrorMessage(self, code: int) -> str:  # noqa: N802
        return "scripted"


def card(events: int) -> tuple[str, int, list[int]]:
    return ("Virtual PCD 00 01", PRESENT | (events << 16), ATR)


def test_known_states_are_fed_back_without_the_changed_bit() -> None:
    api = ScriptedScard()
    monitor = ReaderMonitor(api=api)
    api.answers = [(OK, [card(3)]), (OK, [card(5)])]
    (first,) = monitor.wait(0.5)
    assert first.card_present and first.event_count == 3 and first.atr == bytes(ATR)
    assert api.queries[0] == (500, [scard.SCARD_STATE_UNAWARE])
    (second,) = monitor.wait(5.0)  # capped: a new reader is noticed within a second
    assert second.insertion_id != first.insertion_id
    timeout, states = api.queries[1]
    assert timeout == 1000
    assert states == [(PRESENT | (3 << 16)) & ~scard.SCARD_STATE_CHANGED]
    assert api.contexts == 1  # one long-lived context


def test_a_timeout_answers_the_current_states() -> None:
    api = ScriptedScard()
    monitor = ReaderMonitor(api=api)
    api.answers = [(OK, [card(3)]), (scard.SCARD_E_TIMEOUT, []), (OK, [card(3)])]
    monitor.wait(0.1)
    (same,) = monitor.wait(0.1)
    assert same.event_count == 3
    assert api.queries[-1] == (0, [scard.SCARD_STATE_UNAWARE])


def test_a_lost_service_drops_the_context_and_the_next_wait_starts_again() -> None:
    api = ScriptedScard()
    monitor = ReaderMonitor(api=api)
    api.answers = [(scard.SCARD_E_NO_SERVICE, [])]
    with pytest.raises(NoReaderError):
        monitor.wait(0.1)
    assert api.released == 1
    api.answers = [(OK, [card(1)])]
    assert monitor.wait(0.1)[0].card_present
    assert api.contexts == 2
    assert api.queries[-1][1] == [scard.SCARD_STATE_UNAWARE]  # nothing known any more


def test_no_readers_and_cancel() -> None:
    api = ScriptedScard()
    api.readers = []
    monitor = ReaderMonitor(api=api)
    assert monitor.wait(0.01) == [] and api.queries == []
    monitor.cancel()
    assert api.cancelled == [101]
    assert monitor.wait(1.0) == []  # returns at once once cancelled
    monitor.close()
    assert api.released == 1


class ControlScard(ScriptedScard):
    def __init__(self, rv: int, answer: list[int]) -> None:
        super().__init__()
        self.rv, self.answer = rv, answer
        self.controls: list[tuple[int, int, list[int]]] = []

    def SCardControl(self, handle: int, code: int, data: list[int]) -> tuple[int, list[int]]:  # noqa: N802
        self.controls.append((handle, code, list(data)))
        return self.rv, self.answer


def _connection(api: ControlScard) -> PcscConnection:
    return PcscConnection(
        api=api,
        context=1,
        handle=7,
        protocol=scard.SCARD_PROTOCOL_T1,
        reader="Pad Reader 00 00",
        atr=bytes(ATR),
        insertion_id="Pad Reader 00 00#1#x",
    )


def test_reader_control_codes_and_errors() -> None:
    api = ControlScard(OK, [0x06, 0x04, 0x42, 0x33, 0x00, 0x06])
    connection = _connection(api)
    code = connection.control_code(3400)
    assert code == scard.SCARD_CTL_CODE(3400)  # 0x42000D48 on pcsc-lite
    assert connection.control(code) == bytes.fromhex("060442330006")
    assert api.controls == [(7, code, [])]
    refusing = _connection(ControlScard(scard.SCARD_E_UNSUPPORTED_FEATURE, []))
    with pytest.raises(CardCommunicationError):
        refusing.control(code, b"\x01")
