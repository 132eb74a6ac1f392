"""The PC/SC transport against a fake `smartcard.scard` (no reader is touched here).

The fake answers like pcsc-lite: return codes first, reader states with the event counter
in the high 16 bits of dwEventState. The real stack is exercised by the integration tests.
"""

from __future__ import annotations

import pytest
from agent_fakes import FakeScard
from smartcard import scard

from careid_agent.errors import (
    CardCommunicationError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    PcscUnavailableError,
    ReaderAmbiguousError,
    ReaderBusyError,
    ReaderNotFoundError,
)
from careid_agent.transport import (
    ReaderInfo,
    choose_reader,
    connect,
    error_for_pcsc,
    insertion_id,
    list_readers,
    scan_readers,
)

ATR = [0x3B, 0x81, 0x01, 0x80, 0x00]


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


def test_a_scan_tells_a_stopped_service_from_no_reader() -> None:
    assert scan_readers(api=FakeScard({})) == []
    no_service = FakeScard({"Virtual PCD 00 01": (0, [])})
    no_service.establish_rv = scard.SCARD_E_NO_SERVICE
    with pytest.raises(PcscUnavailableError) as caught:
        scan_readers(api=no_service)
    assert caught.value.code == "no_reader"  # the stable code pages switch on
    assert "8010001D" in (caught.value.detail or "")
    assert "pcscd" in (caught.value.detail or "")


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
    with pytest.raises(ReaderAmbiguousError):
        choose_reader(READERS, "Virtual PCD")
    with pytest.raises(ReaderNotFoundError):
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


def _plain(message: str) -> None:
    # What a clinician reads: no command to run, no PC/SC jargon, someone to ask.
    for hint in ("careid-agent", "PC/SC", "pcscd", "reader's name", "SCARD"):
        assert hint not in message
    assert message.endswith(".")


def test_a_reader_setting_naming_no_reader_tells_the_clinician_what_to_do() -> None:
    with pytest.raises(ReaderNotFoundError) as caught:
        choose_reader(READERS, "Gemalto")
    error = caught.value
    assert error.code == "no_reader"
    _plain(error.message)
    assert "IT support" in error.message
    # IT support gets the setting and every reader that exists.
    assert error.wanted == "Gemalto"
    assert "'Gemalto'" in (error.detail or "")
    for reader in READERS:
        assert repr(reader.name) in (error.detail or "")


def test_a_reader_setting_naming_several_lists_them_for_it_support() -> None:
    with pytest.raises(ReaderAmbiguousError) as caught:
        choose_reader(READERS, "virtual pcd")
    error = caught.value
    assert error.code == "no_reader"
    _plain(error.message)
    assert error.matches == ("Virtual PCD 00 00", "Virtual PCD 00 01")
    assert "2 readers match" in (error.detail or "")
    assert "'Virtual PCD 00 00', 'Virtual PCD 00 01'" in (error.detail or "")
    assert "Omnikey" not in (error.detail or "")


@pytest.mark.parametrize("rv", [scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED])
def test_a_stopped_pcsc_service_is_not_an_unplugged_reader(rv: int) -> None:
    error = error_for_pcsc(rv, connected=False, platform="linux")
    assert isinstance(error, PcscUnavailableError) and error.code == "no_reader"
    _plain(error.message)
    assert "plugged in" not in error.message
    assert "IT support" in error.message
    assert "not running" in (error.detail or "")


def test_on_windows_no_service_means_no_reader_is_plugged_in() -> None:
    # Windows stops its Smart Card service when the last reader goes; plugging one in
    # starts it again, so that is what the clinician is told there.
    error = error_for_pcsc(scard.SCARD_E_NO_SERVICE, connected=False, platform="win32")
    assert isinstance(error, PcscUnavailableError)
    assert "plugged in" in error.message
    assert "no reader is plugged in" in (error.detail or "")


def test_pcsc_errors_keep_the_return_code_out_of_the_message() -> None:
    error = error_for_pcsc(scard.SCARD_E_SHARING_VIOLATION, connected=True)
    assert isinstance(error, ReaderBusyError)
    assert "0x8010000B" in (error.detail or "") and "0x" not in error.message
