"""Asking a reader for its PIN pad: only a real answer is remembered, and a reader that
could not be asked fails that sign-in instead of falling back to the keyboard."""

from __future__ import annotations

import hashlib

import pytest
from agent_fakes import KeyAlgorithm, ReaderConnection, VirtualReader, make_test_profile
from cryptography.hazmat.primitives import hashes

from careid_agent.card import CardService, PinRequest
from careid_agent.errors import (
    CardCommunicationError,
    CardError,
    CardRemovedError,
    ReaderBusyError,
)
from careid_agent.pinpad import GET_FEATURE_REQUEST_FUNCTION, Feature, ReaderPinPad

GET_FEATURES = 0x42000000 + GET_FEATURE_REQUEST_FUNCTION
VERIFY_DIRECT = 0x42330006
#: libccid's entry for FEATURE_VERIFY_PIN_DIRECT.
FEATURES = bytes([Feature.VERIFY_PIN_DIRECT, 4]) + VERIFY_DIRECT.to_bytes(4, "big")
DIGEST = hashlib.sha256(b"TBS").digest()


class PadReader(ReaderConnection):  # type: ignore[misc]
    """A PIN-pad reader over the in-process card whose feature query fails first with
    each of `failures` in turn (another program reset the card, the reader was busy)."""

    def __init__(self, reader: VirtualReader, failures: list[CardError]) -> None:
        assert reader.card is not None
        super().__init__(reader, reader.card)
        self.failures = failures
        self.asked = 0

    def control_code(self, function: int) -> int:
        return 0x42000000 + function

    def control(self, code: int, data: bytes | bytearray = b"") -> bytes:
        if code == GET_FEATURES:
            self.asked += 1
            if self.failures:
                raise self.failures.pop(0)
            return FEATURES
        assert code == VERIFY_DIRECT
        apdu = bytearray(data[19:])
        apdu[5:11] = b"246810"  # the person types the PIN on the reader's keypad
        body, sw = self.transmit(bytes(apdu))
        return bytes(body) + int(sw).to_bytes(2, "big")


def _keyboard(typed: list[PinRequest]) -> object:
    def provider(request: PinRequest) -> bytearray:
        typed.append(request)
        return bytearray(b"246810")

    return provider


@pytest.mark.parametrize(
    "failure",
    [CardRemovedError("reset by another program"), ReaderBusyError()],
    ids=["reset", "busy"],
)
def test_a_failed_feature_query_fails_that_sign_in_and_is_not_remembered(
    failure: CardError,
) -> None:
    reader = VirtualReader(name="Cherry SmartTerminal ST-2xxx 00")
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    failures = [failure]
    service = CardService(lambda: PadReader(reader, failures))
    pad = ReaderPinPad()
    typed: list[PinRequest] = []
    sign = lambda: service.sign_with(  # noqa: E731
        lambda identity: (DIGEST, hashes.SHA256()),
        _keyboard(typed),  # type: ignore[arg-type]
        pin_pad=pad,
    )
    with pytest.raises(type(failure)):
        sign()
    # The reader answers now: its PIN pad takes the PIN, the keyboard is never used.
    for _ in range(2):
        sign()
    assert typed == []


def test_a_reader_that_refuses_the_query_has_no_pin_pad_and_is_asked_once() -> None:
    # Readers without a keypad refuse GET_FEATURE_REQUEST outright (vpcd does): a real
    # answer, remembered, and the keyboard is used.
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    connections: list[PadReader] = []

    def connect() -> PadReader:
        connections.append(PadReader(reader, [CardCommunicationError()] * 10))
        return connections[-1]

    pad = ReaderPinPad()
    assert not pad.available(connect())
    assert not pad.available(connect())
    assert sum(c.asked for c in connections) == 1
