"""PC/SC Part 10 secure PIN entry (FEATURE_VERIFY_PIN_DIRECT).

There is no PIN-pad reader here (vpcd offers no Part 10 features), so these tests use a
fake control channel: a reader that answers GET_FEATURE_REQUEST like libccid does and,
for VERIFY_PIN_DIRECT, "types" a PIN into the APDU template the way a PIN pad does and
sends it to the in-process virtual card. What they prove is our side: detection, the
PIN_VERIFY_STRUCTURE bytes, the mapping of answers, and that the PIN never comes from
(or through) the host. A real PIN-pad reader is still to be tried.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from agent_fakes import (
    KeyAlgorithm,
    ReaderConnection,
    VirtualReader,
    make_test_profile,
)
from cryptography.hazmat.primitives import hashes

from careid_agent.card import CardService, PinRequest
from careid_agent.errors import (
    CardCommunicationError,
    PinBlockedError,
    PinEntryCancelledError,
    PinEntryTimeoutError,
    PinFormatError,
    PinProviderUnavailableError,
    WrongPinError,
)
from careid_agent.pinpad import (
    GET_FEATURE_REQUEST_FUNCTION,
    Feature,
    ReaderPinPad,
    parse_features,
    piv_verify_structure,
)

#: libccid's answer to GET_FEATURE_REQUEST for a PIN-pad reader: it numbers each feature's
#: ioctl SCARD_CTL_CODE(0x330000 + tag) = 0x42330000 + tag. VERIFY_PIN_DIRECT,
#: MODIFY_PIN_DIRECT, IFD_PIN_PROPERTIES, GET_TLV_PROPERTIES.
FEATURES = bytes.fromhex("06 04 42 33 00 06 07 04 42 33 00 07 0A 04 42 33 00 0A 12 04 42 33 00 12")
VERIFY_DIRECT = 0x42330006
GET_FEATURES = 0x42000000 + GET_FEATURE_REQUEST_FUNCTION

REQUEST = PinRequest(reader="Pad", holder_name="Alex Morgan", uuid=None, retries_left=None)


def test_features_parse_like_libccid_announces_them() -> None:
    assert parse_features(FEATURES) == {
        Feature.VERIFY_PIN_DIRECT: 0x42330006,
        Feature.MODIFY_PIN_DIRECT: 0x42330007,
        Feature.IFD_PIN_PROPERTIES: 0x4233000A,
        Feature.GET_TLV_PROPERTIES: 0x42330012,
    }
    assert parse_features(b"") == {}
    # A malformed entry ends the list: the reader offers what came before it.
    assert parse_features(FEATURES[:6] + bytes.fromhex("07 02 00 01")) == {6: 0x42330006}
    assert parse_features(FEATURES[:5]) == {}


def test_the_piv_verify_structure_byte_by_byte() -> None:
    structure = piv_verify_structure(60).to_bytes()
    assert structure == bytes.fromhex(
        "3C"  # bTimerOut: 60 s
        "00"  # bTimerOut2
        "82"  # bmFormatString: bytes, PIN at offset 0, left-justified, ASCII
        "08"  # bmPINBlockString: no length field, 8-byte block
        "00"  # bmPINLengthFormat
        "08 04"  # wPINMaxExtraDigit 0x0408 (4 to 8 digits), little-endian
        "02"  # bEntryValidationCondition: OK key
        "01"  # bNumberMessage
        "09 08"  # wLangId 0x0809 English (UK), little-endian
        "00"  # bMsgIndex
        "00 00 00"  # bTeoPrologue
        "0D 00 00 00"  # ulDataLength 13, little-endian
        "00 20 00 80 08 FF FF FF FF FF FF FF FF"  # VERIFY PIV PIN, 0xFF-filled template
    )
    assert piv_verify_structure(1000).to_bytes()[0] == 0xFF  # clamped to a byte
    assert piv_verify_structure(0.2).to_bytes()[0] == 1  # 0 would mean "reader default"


class PinPadReader(ReaderConnection):  # type: ignore[misc]
    """A CCID PIN-pad reader over the in-process card: `typed` is what the person keys in
    (a PIN, or a reader status word such as 6401 for the cancel key)."""

    def __init__(self, reader: VirtualReader, typed: str | int, features: bytes = FEATURES):
        assert reader.card is not None
        super().__init__(reader, reader.card)
        self.typed = typed
        self.features = features
        self.controls: list[tuple[int, bytes]] = []

    def control_code(self, function: int) -> int:
        return 0x42000000 + function

    def control(self, code: int, data: bytes | bytearray = b"") -> bytes:
        self.controls.append((code, bytes(data)))
        if code == GET_FEATURES:
            return self.features
        if code != VERIFY_DIRECT:
            raise CardCommunicationError()
        if isinstance(self.typed, int):
            return self.typed.to_bytes(2, "big")
        header, apdu = bytes(data[:19]), bytearray(data[19:])
        (length,) = struct.unpack_from("<I", header, 15)
        assert length == len(apdu) and header[2] == 0x82  # ASCII, left-justified, offset 0
        apdu[5 : 5 + len(self.typed)] = self.typed.encode("ascii")  # the keypad fills in
        body, sw = self.transmit(bytes(apdu))
        return bytes(body) + int(sw).to_bytes(2, "big")


def _service(
    reader: VirtualReader, typed: str | int, **pad: bytes
) -> tuple[CardService, list[PinPadReader]]:
    connections: list[PinPadReader] = []

    def connect() -> PinPadReader:
        connection = PinPadReader(reader, typed, **pad)
        reader.connections.append(connection)
        connections.append(connection)
        return connection

    return CardService(connect), connections


def _never_asked(request: PinRequest) -> bytearray:
    raise AssertionError("with a PIN pad the host must not ask for the PIN")


def test_a_pin_pad_reader_verifies_and_the_host_never_sees_the_pin() -> None:
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    service, connections = _service(reader, "246810")
    pad = ReaderPinPad(timeout=30)
    digest = hashlib.sha256(b"TBS").digest()
    result = service.sign_with(
        lambda identity: (digest, hashes.SHA256()), _never_asked, pin_pad=pad, requester="x"
    )
    assert result.signature
    connection = connections[0]
    codes = [code for code, _ in connection.controls]
    assert codes == [GET_FEATURES, VERIFY_DIRECT]
    sent = connection.controls[1][1]
    assert sent == piv_verify_structure(30).to_bytes()
    assert b"246810" not in b"".join(data for _, data in connection.controls)
    # The VERIFY the card got came from the "reader", between SELECT and the signature.
    assert [apdu[1] for apdu in connection.commands][-3:] == [0xA4, 0x20, 0x87]
    # The reader's features are asked once per reader, not at every sign-in.
    service.sign_with(lambda identity: (digest, hashes.SHA256()), _never_asked, pin_pad=pad)
    assert [code for code, _ in connections[1].controls] == [VERIFY_DIRECT]


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("111111", WrongPinError),
        (0x6400, PinEntryTimeoutError),
        (0x6401, PinEntryCancelledError),
        (0x6403, PinFormatError),
        (0x6B80, PinProviderUnavailableError),
        (0x6983, PinBlockedError),
    ],
)
def test_pin_pad_answers_become_plain_errors(typed: str | int, error: type[Exception]) -> None:
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    service, _ = _service(reader, typed)
    digest = hashlib.sha256(b"TBS").digest()
    with pytest.raises(error) as caught:
        service.sign_with(
            lambda identity: (digest, hashes.SHA256()), _never_asked, pin_pad=ReaderPinPad()
        )
    if isinstance(caught.value, WrongPinError):
        assert caught.value.retries_left == 2


def test_readers_without_a_pin_pad_use_the_pin_provider() -> None:
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P256))
    asked: list[PinRequest] = []

    def provider(request: PinRequest) -> bytearray:
        asked.append(request)
        return bytearray(b"246810")

    digest = hashlib.sha256(b"TBS").digest()
    # A reader announcing other features but not VERIFY_PIN_DIRECT.
    service, connections = _service(reader, "unused", features=FEATURES[6:])
    service.sign_with(lambda identity: (digest, hashes.SHA256()), provider, pin_pad=ReaderPinPad())
    assert len(asked) == 1
    # A reader refusing the feature request (as vpcd does), and a connection that has no
    # control channel at all (the in-process card): the same.
    refusing = ReaderPinPad()
    bare = reader.connect()
    assert not refusing.available(bare)
    with pytest.raises(PinProviderUnavailableError):
        refusing.verify(bare, REQUEST)

    class Refuses(PinPadReader):
        def control(self, code: int, data: bytes | bytearray = b"") -> bytes:
            raise CardCommunicationError()

    assert not ReaderPinPad().available(Refuses(reader, "unused"))
    assert [code for code, _ in connections[0].controls] == [GET_FEATURES]
