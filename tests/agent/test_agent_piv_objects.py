"""PIV data objects and signature inputs, on recorded and hand-built hex vectors."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from typing import Any

import pytest
from agent_fakes import KeyAlgorithm, h, make_test_profile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from careid_agent.errors import (
    CertificateMalformedError,
    MalformedDataError,
    NoCertificateError,
    PinFormatError,
    UnsupportedKeyError,
)
from careid_agent.piv_objects import (
    algorithm_for_key,
    auth_template,
    check_signature_shape,
    ecdsa_input,
    encode_pin,
    load_certificate,
    parse_auth_response,
    parse_certificate_object,
    parse_chuid,
    pkcs1_v15_block,
    signature_input,
)
from careid_protocol import tlv
from careid_protocol.piv import Algorithm
from support.damaged_certificates import unreadable_name, with_negative_serial, with_version


def _cert_der(algorithm: KeyAlgorithm = KeyAlgorithm.P256) -> bytes:
    pem = make_test_profile(algorithm).certificate_pem.encode()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _cert_object(der: bytes, info: bytes = b"\x00") -> bytes:
    return tlv.encode(0x53, tlv.encode(0x70, der) + tlv.encode(0x71, info) + tlv.encode(0xFE, b""))


def test_certificate_object_with_long_form_lengths() -> None:
    der = _cert_der(KeyAlgorithm.RSA2048)
    obj = _cert_object(der)
    # 53 82 xx xx 70 82 xx xx: both lengths need the two-byte long form.
    assert obj[:2] == h("53 82") and obj[4:6] == h("70 82")
    assert parse_certificate_object(obj) == der


def test_compressed_certificate_is_inflated() -> None:
    der = _cert_der()
    assert parse_certificate_object(_cert_object(gzip.compress(der), b"\x01")) == der


def test_bad_gzip_is_a_malformed_certificate() -> None:
    with pytest.raises(CertificateMalformedError):
        parse_certificate_object(_cert_object(b"not gzip at all", b"\x01"))


def test_a_gzip_bomb_is_refused() -> None:
    with pytest.raises(CertificateMalformedError):
        parse_certificate_object(_cert_object(gzip.compress(bytes(1_000_000)), b"\x01"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda der: with_version(der, 3),  # not a ValueError: once an unhandled crash
        lambda der: with_negative_serial(der),
        lambda der: unreadable_name(der, "subject"),
    ],
    ids=["v4", "negative-serial", "subject"],
)
def test_a_certificate_that_cannot_be_fully_read_is_malformed(damage: Any) -> None:
    with pytest.raises(CertificateMalformedError):
        load_certificate(damage(_cert_der()))


@pytest.mark.parametrize(
    "vector",
    [
        "53 04 70 00 FE 00",  # an empty certificate slot, as some cards return
        "53 03 71 01 00",  # no 70 at all
    ],
)
def test_empty_certificate_object_means_no_certificate(vector: str) -> None:
    with pytest.raises(NoCertificateError):
        parse_certificate_object(h(vector))


@pytest.mark.parametrize("vector", ["53 10 70 05 01", "70 03 01 02 03", "", "53"])
def test_malformed_certificate_object(vector: str) -> None:
    with pytest.raises(CertificateMalformedError):
        parse_certificate_object(h(vector))


FASC_N = "D4E739DA739CED39CE739D836858210842108421C84210C3EB"
GUID = "00112233445566778899AABBCCDDEEFF"
CHUID = f"53 3B 30 19 {FASC_N} 34 10 {GUID} 35 08 3230333031323331 3E 00 FE 00"


def test_chuid_vector() -> None:
    chuid = parse_chuid(h(CHUID))
    assert chuid.fasc_n == h(FASC_N)
    assert chuid.guid == h(GUID)
    assert chuid.expiry == dt.date(2030, 12, 31)
    assert chuid.card_id == "00112233-4455-6677-8899-aabbccddeeff"
    assert chuid.cardholder_uuid is None


@pytest.mark.parametrize(
    "vector",
    [
        f"53 29 30 19 {FASC_N} 35 08 3230333031323331 3E 00 FE 00",  # no GUID
        f"53 3B 30 19 {FASC_N} 34 10 {GUID} 35 08 3230333031333331 3E 00 FE 00",  # 31 Dec
        "53 05 34 03 01 02 03",
        "70 00",
    ],
)
def test_malformed_chuid(vector: str) -> None:
    # The second vector's date is 2030-13-31: no such month.
    with pytest.raises(MalformedDataError):
        parse_chuid(h(vector))


def test_key_algorithms_from_certificates() -> None:
    assert algorithm_for_key(ec.generate_private_key(ec.SECP256R1()).public_key()) == 0x11
    assert algorithm_for_key(ec.generate_private_key(ec.SECP384R1()).public_key()) == 0x14
    rsa_2048 = x509.load_der_x509_certificate(_cert_der(KeyAlgorithm.RSA2048)).public_key()
    assert algorithm_for_key(rsa_2048) == 0x07


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
        # A weak key on purpose: the agent must refuse it.
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),  # noqa: S505
        lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
    ],
)
def test_other_keys_are_unsupported(make_key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedKeyError):
        algorithm_for_key(make_key())


@pytest.mark.parametrize(
    ("pin", "encoded"),
    [
        ("246810", "32 34 36 38 31 30 FF FF"),
        ("1234", "31 32 33 34 FF FF FF FF"),
        ("12345678", "31 32 33 34 35 36 37 38"),
        ("Ab3!x", "41 62 33 21 78 FF FF FF"),
        (bytearray(b"246810"), "32 34 36 38 31 30 FF FF"),
    ],
)
def test_pin_encoding(pin: str | bytearray, encoded: str) -> None:
    assert encode_pin(pin) == h(encoded)


@pytest.mark.parametrize("pin", ["123", "123456789", "", "12 3\n", "12345\xe9", "1234\xff"])
def test_pin_format_errors_never_reveal_the_pin(pin: str) -> None:
    with pytest.raises(PinFormatError) as caught:
        encode_pin(pin)
    assert caught.value.message == (
        "A smartcard PIN is 4 to 8 characters long. Check it and try again."
    )
    assert pin not in str(caught.value) or not pin


def test_pkcs1_block_is_what_an_rsa_signature_opens_to() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = b"care identity"
    digest = hashlib.sha256(message).digest()
    block = pkcs1_v15_block(digest, hashes.SHA256(), 256)
    assert block[:2] == h("00 01") and block[-51:-32] == h(
        "30 31 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20"
    )
    assert set(block[2:-52]) == {0xFF} and block[-52] == 0
    # cryptography's own PKCS#1 v1.5 signature, opened with the public key, is that block.
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    numbers = key.public_key().public_numbers()
    opened = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(256, "big")
    assert opened == block


def test_pkcs1_block_for_sha384() -> None:
    digest = hashlib.sha384(b"x").digest()
    block = pkcs1_v15_block(digest, hashes.SHA384(), 256)
    assert block.endswith(h("30 41 30 0D 06 09 60 86 48 01 65 03 04 02 02 05 00 04 30") + digest)
    with pytest.raises(ValueError):
        pkcs1_v15_block(digest, hashes.SHA256(), 256)


def test_ecdsa_input_is_the_field_size() -> None:
    sha256 = hashlib.sha256(b"x").digest()
    sha384 = hashlib.sha384(b"x").digest()
    assert ecdsa_input(sha256, Algorithm.ECC_P256) == sha256
    assert ecdsa_input(sha384, Algorithm.ECC_P256) == sha384[:32]  # leftmost bits
    assert ecdsa_input(sha256, Algorithm.ECC_P384) == bytes(16) + sha256  # same integer
    with pytest.raises(ValueError):
        signature_input(sha256[:31], Algorithm.ECC_P256, hashes.SHA256())


def test_auth_template_vectors() -> None:
    digest = bytes(range(32))
    assert auth_template(digest) == h("7C 24 82 00 81 20") + digest
    block = bytes(256)
    assert auth_template(block) == h("7C 82 01 06 82 00 81 82 01 00") + block


def test_auth_response_vectors() -> None:
    sig = bytes(range(70))
    assert parse_auth_response(h("7C 48 82 46") + sig) == sig
    # Other tags inside the template are ignored; 82 is found wherever it is.
    assert parse_auth_response(h("7C 4A 80 00 82 46") + sig) == sig
    for bad in ("7C 02 80 00", "7D 02 82 00", "7C 05 82 10 00"):
        with pytest.raises(MalformedDataError):
            parse_auth_response(h(bad))


def test_signature_shape_checks() -> None:
    good = encode_dss_signature(5, 7)
    assert check_signature_shape(good, Algorithm.ECC_P256) == good
    for bad in (b"", b"\x30\x00", encode_dss_signature(0, 7), encode_dss_signature(1 << 256, 1)):
        with pytest.raises(MalformedDataError):
            check_signature_shape(bad, Algorithm.ECC_P256)
    assert check_signature_shape(encode_dss_signature(1 << 300, 1), Algorithm.ECC_P384)
    rsa_sig = b"\x01" * 255
    assert check_signature_shape(rsa_sig, Algorithm.RSA_2048) == b"\x00" + rsa_sig
    for bad in (b"", bytes(256), b"\x01" * 257):
        with pytest.raises(MalformedDataError):
            check_signature_shape(bad, Algorithm.RSA_2048)
