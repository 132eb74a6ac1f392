"""The virtual card through the real PC/SC stack: pyscard → pcscd → vpcd → VpcdCardClient."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

import pytest
from cardsim_profiles import h, make_test_profile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.cardsim import PIV_ATR, PivApplet, VpcdCardClient
from careid_devkit.pcscd import Pcscd
from careid_protocol import tlv

pytest.importorskip("smartcard", reason="needs pyscard")
from smartcard.CardConnection import CardConnection  # noqa: E402
from smartcard.Exceptions import CardConnectionException, NoCardException  # noqa: E402
from smartcard.scard import SCARD_LEAVE_CARD  # noqa: E402
from smartcard.System import readers  # noqa: E402

pytestmark = pytest.mark.pcsc

READER = "Virtual PCD 00 00"
PORT = 35963


class YankSwitch:
    """Decides per APDU whether the card is pulled out as it arrives."""

    def __init__(self) -> None:
        self.yank_on_ins: int | None = None

    def __call__(self, apdu: bytes) -> bool:
        return apdu[1] != self.yank_on_ins


@pytest.fixture(scope="module")
def yank() -> YankSwitch:
    return YankSwitch()


@pytest.fixture(scope="module")
def card(pcscd: Pcscd, yank: YankSwitch) -> Iterator[VpcdCardClient]:
    """The P-256 test card in reader 00 00 for this module; removed at teardown."""
    applet = PivApplet(make_test_profile(KeyAlgorithm.P256))
    client = VpcdCardClient(applet, port=PORT, on_command=yank)
    client.start()
    try:
        if not client.wait_inserted(timeout=15):
            pytest.fail(f"vpcd never asked the card for its ATR on port {PORT}")
        yield client
    finally:
        client.stop()


def connect() -> CardConnection:
    reader = next(r for r in readers() if str(r) == READER)
    connection = reader.createConnection()
    connection.connect(disposition=SCARD_LEAVE_CARD)
    return connection


def close(connection: CardConnection) -> None:
    try:
        connection.disconnect()
    finally:
        connection.release()


def transmit(connection: CardConnection, apdu: bytes) -> tuple[bytes, int]:
    data, sw1, sw2 = connection.transmit(list(apdu))
    return bytes(data), (sw1 << 8) | sw2


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def card_present() -> bool:
    try:
        connection = connect()
    except NoCardException:
        return False
    close(connection)
    return True


def test_pyscard_reads_verifies_and_signs(card: VpcdCardClient) -> None:
    assert READER in [str(r) for r in readers()]
    connection = connect()
    try:
        assert bytes(connection.getATR()) == PIV_ATR
        data, sw = transmit(connection, h("00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00"))
        assert (data, sw) == (h("61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08"), 0x9000)
        # pcsc-lite does not follow 61xx on T=1: the host sends GET RESPONSE itself.
        data, sw = transmit(connection, h("00 CB 3F FF 05 5C 03 5F C1 05 00"))
        while sw >> 8 == 0x61:
            more, sw = transmit(connection, h("00 C0 00 00") + bytes([sw & 0xFF]))
            data += more
        assert sw == 0x9000
        cert_der = tlv.find(tlv.parse_single(data, 0x53), 0x70)
        assert cert_der is not None
        cert = x509.load_der_x509_certificate(cert_der)
        assert cert.public_bytes(serialization.Encoding.PEM).decode() == (
            card.applet.profile.certificate_pem
        )
        assert transmit(connection, h("00 20 00 80 08 32 34 36 38 31 30 FF FF")) == (b"", 0x9000)
        digest = hashlib.sha256(b"challenge").digest()
        body = tlv.encode(0x7C, h("82 00") + tlv.encode(0x81, digest))
        data, sw = transmit(connection, h("00 87 11 9A") + bytes([len(body)]) + body + h("00"))
        assert sw == 0x9000
        signature = tlv.parse_single(tlv.parse_single(data, 0x7C), 0x82)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    finally:
        close(connection)
    assert card.counters.commands >= 4


def test_stop_removes_the_card_and_start_inserts_it_again(card: VpcdCardClient) -> None:
    assert card_present()
    card.stop()
    assert wait_for(lambda: not card_present()), "pcscd still sees a card after stop()"
    card.start()
    assert card.wait_inserted(timeout=10)
    assert wait_for(card_present)


def test_yanking_the_card_mid_command(card: VpcdCardClient, yank: YankSwitch) -> None:
    connection = connect()
    try:
        transmit(connection, h("00 A4 04 00 05 A0 00 00 03 08"))
        yank.yank_on_ins = 0x20
        with pytest.raises(CardConnectionException):
            transmit(connection, h("00 20 00 80 08 32 34 36 38 31 30 FF FF"))
    finally:
        yank.yank_on_ins = None
        try:
            close(connection)
        except CardConnectionException:
            pass  # the card is gone: there is nothing left to disconnect from
    assert wait_for(lambda: not card_present())
    assert not card.applet.pin_verified
    card.start()
    assert card.wait_inserted(timeout=10)
    assert wait_for(card_present)
