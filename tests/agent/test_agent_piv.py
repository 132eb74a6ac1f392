"""The PIV session: exact APDUs on scripted vectors, then against the virtual card."""

from __future__ import annotations

import hashlib

import pytest
from agent_fakes import PIN, KeyAlgorithm, ScriptedConnection, h, make_test_profile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from careid_agent.errors import (
    ApduError,
    NoCertificateError,
    NotPivCardError,
    PinBlockedError,
    PinFormatError,
    SecurityStatusError,
    WrongPinError,
)
from careid_agent.piv import PivSession
from careid_devkit.cardsim import InProcessConnection, PivApplet
from careid_protocol import tlv
from careid_protocol.piv import Algorithm

SELECT = "00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00 00"
APT = "61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08"
GET_CERT = "00 CB 3F FF 05 5C 03 5F C1 05 00"
GET_CHUID = "00 CB 3F FF 05 5C 03 5F C1 02 00"
VERIFY_PIN = "00 20 00 80 08 32 34 36 38 31 30 FF FF"


def test_select_sends_the_full_aid() -> None:
    card = ScriptedConnection([(SELECT, APT + "90 00")])
    assert PivSession(card).select() == h(APT)


@pytest.mark.parametrize("sw", ["6A 82", "6D 00", "6E 00", "69 99"])
def test_select_on_a_card_without_piv(sw: str) -> None:
    with pytest.raises(NotPivCardError):
        PivSession(ScriptedConnection([(SELECT, sw)])).select()


def test_certificate_read_in_pieces() -> None:
    pem = make_test_profile(KeyAlgorithm.RSA2048).certificate_pem.encode()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    obj = tlv.encode(
        0x53, tlv.encode(0x70, der) + tlv.encode(0x71, b"\x00") + tlv.encode(0xFE, b"")
    )
    pieces = [obj[i : i + 256] for i in range(0, len(obj), 256)]
    steps = [(GET_CERT, pieces[0].hex() + f"61{min(len(obj) - 256, 256) & 0xFF:02X}")]
    for index, piece in enumerate(pieces[1:], start=1):
        left = len(obj) - 256 * (index + 1)
        sw = f"61{min(left, 256) & 0xFF:02X}" if left > 0 else "9000"
        steps.append((f"00 C0 00 00 {len(piece) & 0xFF:02X}", piece.hex() + sw))
    card = ScriptedConnection(steps)
    cert = PivSession(card).read_certificate()
    assert cert.public_bytes(serialization.Encoding.DER) == der
    assert card.done() and len(card.sent) == len(pieces) >= 3


def test_absent_certificate() -> None:
    with pytest.raises(NoCertificateError):
        PivSession(ScriptedConnection([(GET_CERT, "6A 82")])).read_certificate()


def test_absent_chuid_is_none() -> None:
    assert PivSession(ScriptedConnection([(GET_CHUID, "6A 82")])).read_chuid() is None


@pytest.mark.parametrize(
    ("query", "sw", "verified", "left"),
    [
        ("00 20 00 80", "63 C3", False, 3),
        ("00 20 00 80", "90 00", True, None),
        ("00 20 00 80", "69 83", False, 0),
        ("00 20 00 80", "63 C0", False, 0),
    ],
)
def test_pin_status(query: str, sw: str, verified: bool, left: int | None) -> None:
    status = PivSession(ScriptedConnection([(query, sw)])).pin_status()
    assert (status.verified, status.retries_left, status.blocked) == (verified, left, left == 0)


def test_pin_retries_raises_when_blocked() -> None:
    assert PivSession(ScriptedConnection([("00 20 00 80", "63 C2")])).pin_retries() == 2
    with pytest.raises(PinBlockedError):
        PivSession(ScriptedConnection([("00 20 00 80", "69 83")])).pin_retries()


@pytest.mark.parametrize(
    ("sw", "error", "left"),
    [("63 C2", WrongPinError, 2), ("63 C1", WrongPinError, 1), ("63 C0", PinBlockedError, 0)],
)
def test_verify_pin_errors(sw: str, error: type, left: int) -> None:
    card = ScriptedConnection([(VERIFY_PIN, sw)])
    with pytest.raises(error) as caught:
        PivSession(card).verify_pin(PIN)
    if isinstance(caught.value, WrongPinError):
        assert caught.value.retries_left == left
        assert f"{left} tr" in caught.value.message


def test_verify_pin_ok_and_a_bad_format_sends_nothing() -> None:
    card = ScriptedConnection([(VERIFY_PIN, "90 00")])
    PivSession(card).verify_pin(bytearray(PIN.encode()))
    with pytest.raises(PinFormatError):
        PivSession(card).verify_pin("12")
    assert card.done() and len(card.sent) == 1


# -- against the virtual card ------------------------------------------------------------


def _session(algorithm: KeyAlgorithm, **options: str) -> tuple[PivSession, PivApplet]:
    applet = PivApplet(make_test_profile(algorithm, **options))
    return PivSession(InProcessConnection(applet)), applet


@pytest.mark.parametrize(
    ("key_type", "algorithm", "hash_algorithm"),
    [
        (KeyAlgorithm.P256, Algorithm.ECC_P256, hashes.SHA256()),
        (KeyAlgorithm.P384, Algorithm.ECC_P384, hashes.SHA384()),
        (KeyAlgorithm.RSA2048, Algorithm.RSA_2048, hashes.SHA256()),
    ],
)
def test_signatures_verify_with_the_certificate(
    key_type: KeyAlgorithm, algorithm: Algorithm, hash_algorithm: hashes.HashAlgorithm
) -> None:
    session, _ = _session(key_type)
    session.select()
    cert = session.read_certificate()
    session.verify_pin(PIN)
    data = b"https://broker.example.nhs.uk challenge"
    digest = hashlib.new(hash_algorithm.name, data).digest()
    signature = session.sign_digest(digest, algorithm=algorithm, hash_algorithm=hash_algorithm)
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, digest, ec.ECDSA(Prehashed(hash_algorithm)))
        key.verify(signature, data, ec.ECDSA(hash_algorithm))
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert len(signature) == 256
        key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)


def test_sign_before_verify_is_a_security_status_error() -> None:
    session, _ = _session(KeyAlgorithm.P256)
    session.select()
    with pytest.raises(SecurityStatusError):
        session.sign_digest(bytes(32), algorithm=Algorithm.ECC_P256, hash_algorithm=hashes.SHA256())


def test_wrong_algorithm_for_the_key_is_an_apdu_error() -> None:
    session, _ = _session(KeyAlgorithm.P256)
    session.select()
    session.verify_pin(PIN)
    with pytest.raises(ApduError) as caught:
        session.sign_digest(bytes(48), algorithm=Algorithm.ECC_P384, hash_algorithm=hashes.SHA384())
    assert caught.value.sw == 0x6A86


def test_pin_tries_run_out_against_the_virtual_card() -> None:
    session, applet = _session(KeyAlgorithm.P256)
    session.select()
    assert session.pin_retries() == 3
    with pytest.raises(WrongPinError) as first:
        session.verify_pin("111111")
    assert first.value.retries_left == 2
    with pytest.raises(WrongPinError):
        session.verify_pin("111111")
    with pytest.raises(PinBlockedError):  # 63C0: this try used the last retry
        session.verify_pin("111111")
    with pytest.raises(PinBlockedError):  # 6983, even with the right PIN
        session.verify_pin(PIN)
    with pytest.raises(PinBlockedError):
        session.pin_retries()
    assert applet.profile.pin_retries_left == 0


def test_status_logout_and_reverify() -> None:
    session, _ = _session(KeyAlgorithm.P256)
    session.select()
    session.verify_pin(PIN)
    assert session.pin_status().verified
    session.select()  # re-selecting PIV keeps the PIN verified
    assert session.pin_retries() is None
    session.logout()
    assert session.pin_status().retries_left == 3


def test_chuid_from_the_virtual_card() -> None:
    session, applet = _session(KeyAlgorithm.P256)
    session.select()
    chuid = session.read_chuid()
    assert chuid is not None
    assert chuid.guid.hex() == applet.profile.card_guid_hex
    assert chuid.fasc_n[:3] == h("D4 E7 39")
