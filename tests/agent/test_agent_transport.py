"""The PC/SC transport against a fake `smartcard.scard` (no reader is touched here).

The fake answers like pcsc-lite: return codes first, reader states with the event counter
in the high 16 bits of dwEventState. The real stack is exercised by the integration tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from smartcard import scard

from careid_agent.errors import (
    CardCommunicationError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    ReaderBusyError,
)
from careid_agent.transport import (
    ReaderInfo,
    choose_reader,
    connect,
    error_for_pcsc,
    insertion_id,
    list_readers,
)

OK: int = scard.SCARD_S_SUCCESS
ATR = [0x3B, 0x81, 0x01, 0x80, 0x00]


class FakeScard:
    """Just enough of pyscard's `smartcard.scard` module, recording every call."""

    def __init__(self, readers: dict[str, tuple[int, list[int]]]) -> None:
        # name -> (dwEventState, ATR)
        self.readers = readers
        self.calls: list[tuple[Any, ...]] = []
        self.establish_rv: int = OK
        self.connect_rv: int = OK
        self.transmit_rv: int = OK
        self.begin_rv: int = OK
        self.response = [0x90, 0x00]
        self.released = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(scard, name)  # constants

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]:
        self.calls.append(("establish", scope))
        return self.establish_rv, 1234

    def SCardReleaseContext(self, context: int) -> int:
        self.released += 1
        return OK

    def SCardListReaders(self, context: int, groups: list[str]) -> tuple[int, list[str]]:
        if not self.readers:
            return scard.SCARD_E_NO_READERS_AVAILABLE, []
        return OK, list(self.readers)

    def SCardGetStatusChange(
        self, context: int, timeout: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        self.calls.append(("status", timeout, [s[1] for s in states]))
        return OK, [(name, *self.readers[name]) for name, _ in states]

    def SCardConnect(
        self, context: int, name: str, share: int, protocols: int
    ) -> tuple[int, int, int]:
        self.calls.append(("connect", name, share, protocols))
        return self.connect_rv, 777, scard.SCARD_PROTOCOL_T1

    def SCardTransmit(self, handle: int, pci: int, apdu: list[int]) -> tuple[int, list[int]]:
        self.calls.append(("transmit", pci, bytes(apdu)))
        return self.transmit_rv, list(self.response) if self.transmit_rv == OK else []

    def SCardBeginTransaction(self, handle: int) -> int:
        self.calls.append(("begin",))
        return self.begin_rv

    def SCardEndTransaction(self, handle: int, disposition: int) -> int:
        self.calls.append(("end", disposition))
        return OK

    def SCardDisconnect(self, handle: int, disposition: int) -> int:
        self.calls.append(("disconnect", disposition))
        return OK

    def SCardGetErrorMessage(self, code: int) -> str:
        return str(scard.SCardGetErrorMessage(code))


PRESENT = scard.SCARD_STATE_PRESENT | scard.SCARD_STATE_CHANGED
EMPTY = scard.SCARD_STATE_EMPTY | scard.SCARD_STATE_CHANGED


def two_readers() -> FakeScard:
    return FakeScard(
        {
            "Acme Keyboard Reader 00 00": (EMPTY | (2 << 16), []),
            "Virtual PCD 00 01": (PRESENT | (7 << 16), ATR),
        }
    )


def test_list_readers_reports_presence_atr_and_the_event_counter() -> None:
    api = two_readers()
    readers = list_readers(api=api)
    assert readers == [
        ReaderInfo(name="Acme Keyboard Reader 00 00", card_present=False, atr=b"", event_count=2),
        ReaderInfo(name="Virtual PCD 00 01", card_present=True, atr=bytes(ATR), event_count=7),
    ]
    assert readers[0].insertion_id is None
    assert readers[1].insertion_id == "Virtual PCD 00 01#7#3b81018000"
    # Asked as SCARD_STATE_UNAWARE with no wait, so the call returns at once.
    assert ("status", 0, [scard.SCARD_STATE_UNAWARE] * 2) in api.calls
    assert api.released == 1


def test_no_service_or_no_readers_is_an_empty_list() -> None:
    assert list_readers(api=FakeScard({})) == []
    no_service = FakeScard({})
    no_service.establish_rv = scard.SCARD_E_NO_SERVICE
    assert list_readers(api=no_service) == []


def _info(name: str, present: bool) -> ReaderInfo:
    return ReaderInfo(
        name=name, card_present=present, atr=b"\x3b" if present else b"", event_count=1
    )


READERS = [
    _info("Acme Keyboard Reader 00 00", False),
    _info("Virtual PCD 00 00", True),
    _info("Virtual PCD 00 01", True),
    _info("Omnikey CardMan 3121 00 00", True),
]


def test_choose_reader() -> None:
    assert choose_reader(READERS, None).name == "Virtual PCD 00 00"
    assert choose_reader(READERS, None, ["omnikey"]).name == "Omnikey CardMan 3121 00 00"
    assert choose_reader(READERS, None, ["nothing", "PCD 00 01"]).name == "Virtual PCD 00 01"
    assert choose_reader(READERS, "Virtual PCD 00 01").name == "Virtual PCD 00 01"
    assert choose_reader(READERS, "pcd 00 01").name == "Virtual PCD 00 01"
    with pytest.raises(NoReaderError):
        choose_reader(READERS, "Virtual PCD")  # ambiguous
    with pytest.raises(NoReaderError):
        choose_reader(READERS, "Gemalto")
    with pytest.raises(NoCardError):
        choose_reader(READERS, "Acme")
    with pytest.raises(NoCardError):
        choose_reader(READERS[:1], None)
    with pytest.raises(NoReaderError):
        choose_reader([], None)


def test_connect_shares_the_card_and_never_unpowers_it() -> None:
    api = two_readers()
    connection = connect(api=api)
    assert connection.reader == "Virtual PCD 00 01"
    assert connection.atr == bytes(ATR)
    assert connection.insertion_id == "Virtual PCD 00 01#7#3b81018000"
    assert (
        "connect",
        "Virtual PCD 00 01",
        scard.SCARD_SHARE_SHARED,
        scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
    ) in api.calls
    api.response = [0x61, 0x10, 0x90, 0x00]
    with connection.transaction():
        assert connection.transmit(b"\x00\xa4\x04\x00") == (b"\x61\x10", 0x9000)
    connection.close()
    connection.close()  # idempotent
    assert ("transmit", scard.SCARD_PCI_T1, b"\x00\xa4\x04\x00") in api.calls
    assert ("end", scard.SCARD_LEAVE_CARD) in api.calls
    disconnects = [c for c in api.calls if c[0] == "disconnect"]
    assert disconnects == [("disconnect", scard.SCARD_LEAVE_CARD)]
    assert api.released == 1
    with pytest.raises(CardCommunicationError):
        connection.transmit(b"\x00\xa4\x04\x00")


def test_a_new_insertion_gets_a_new_identity() -> None:
    api = two_readers()
    first = connect(api=api)
    first.close()
    api.readers["Virtual PCD 00 01"] = (PRESENT | (9 << 16), ATR)  # removed and re-inserted
    second = connect(api=api)
    second.close()
    assert first.insertion_id != second.insertion_id


@pytest.mark.parametrize(
    ("rv", "error"),
    [
        (scard.SCARD_W_REMOVED_CARD, CardRemovedError),
        (scard.SCARD_E_NO_SMARTCARD, CardRemovedError),
        (scard.SCARD_W_RESET_CARD, CardRemovedError),
        (scard.SCARD_E_READER_UNAVAILABLE, CardRemovedError),
        (scard.SCARD_F_COMM_ERROR, CardCommunicationError),
        (scard.SCARD_E_NOT_TRANSACTED, CardCommunicationError),
    ],
)
def test_transmit_errors_after_connect(rv: int, error: type) -> None:
    api = two_readers()
    connection = connect(api=api)
    api.transmit_rv = rv
    with pytest.raises(error) as caught:
        connection.transmit(b"\x00\xa4\x04\x00")
    assert type(caught.value) is error
    connection.close()


@pytest.mark.parametrize("rv", [scard.SCARD_F_COMM_ERROR, scard.SCARD_E_NOT_TRANSACTED])
def test_a_communication_error_with_the_card_gone_is_a_removal(rv: int) -> None:
    # The card was pulled mid-signature: whatever PC/SC said, the person removed it.
    api = two_readers()
    connection = connect(api=api)
    api.transmit_rv = rv
    api.readers["Virtual PCD 00 01"] = (EMPTY | (8 << 16), [])
    with pytest.raises(CardRemovedError):
        connection.transmit(b"\x00\x87\x11\x9a")
    connection.close()


def test_reset_by_another_program_says_so() -> None:
    error = error_for_pcsc(scard.SCARD_W_RESET_CARD, connected=True)
    assert isinstance(error, CardRemovedError) and "reset" in error.message


@pytest.mark.parametrize(
    ("rv", "error"),
    [
        (scard.SCARD_E_NO_SMARTCARD, NoCardError),
        (scard.SCARD_W_REMOVED_CARD, NoCardError),
        (scard.SCARD_E_SHARING_VIOLATION, ReaderBusyError),
        (scard.SCARD_E_UNKNOWN_READER, NoReaderError),
        (scard.SCARD_W_UNRESPONSIVE_CARD, CardCommunicationError),
    ],
)
def test_connect_errors(rv: int, error: type) -> None:
    api = two_readers()
    api.connect_rv = rv
    with pytest.raises(error):
        connect(api=api)
    assert api.released == 1  # the context is not leaked


def test_a_busy_reader_at_transaction_start() -> None:
    api = two_readers()
    connection = connect(api=api)
    api.begin_rv = scard.SCARD_E_SHARING_VIOLATION
    with pytest.raises(ReaderBusyError), connection.transaction():
        pytest.fail("the body must not run without the transaction")
    assert not [c for c in api.calls if c[0] == "end"]
    connection.close()


def test_no_reader_when_connecting() -> None:
    with pytest.raises(NoReaderError):
        connect(api=FakeScard({}))
    with pytest.raises(NoCardError):
        connect(api=FakeScard({"Acme 00 00": (EMPTY, [])}))


def test_insertion_id_names_reader_counter_and_atr() -> None:
    assert insertion_id("R", 3, b"\x3b\x00") == "R#3#3b00"
