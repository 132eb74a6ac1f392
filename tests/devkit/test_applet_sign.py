"""GENERAL AUTHENTICATE with the 9A key: signatures verify with the card's certificate."""

from __future__ import annotations

import hashlib

import pytest
from cardsim_profiles import exchange_all, h, new_card
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.cardsim import InProcessConnection
from careid_protocol import tlv

SHA256_DIGEST_INFO = h("30 31 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20")
MESSAGE = b"origin hash || challenge hash"


def ready(algorithm: KeyAlgorithm, *, verify: bool = True) -> InProcessConnection:
    card = new_card(algorithm)
    assert card.transmit(h("00 A4 04 00 05 A0 00 00 03 08"))[1] == 0x9000
    if verify:
        assert card.transmit(h("00 20 00 80 08 32 34 36 38 31 30 FF FF")) == (b"", 0x9000)
    return card


def public_key(card: InProcessConnection) -> object:
    pem = card.applet.profile.certificate_pem.encode()
    return x509.load_pem_x509_certificate(pem).public_key()


def template(challenge: bytes, *, response_first: bool = True) -> bytes:
    parts = [tlv.encode(0x82, b""), tlv.encode(0x81, challenge)]
    if not response_first:
        parts.reverse()
    return tlv.encode(0x7C, b"".join(parts))


def short_apdu(alg: int, body: bytes, key: int = 0x9A) -> bytes:
    assert len(body) < 256
    return bytes([0x00, 0x87, alg, key, len(body)]) + body + b"\x00"


def signature_from(response: bytes) -> bytes:
    return tlv.parse_single(tlv.parse_single(response, 0x7C), 0x82)


@pytest.mark.parametrize(
    ("algorithm", "alg", "hash_algorithm"),
    [
        (KeyAlgorithm.P256, 0x11, hashes.SHA256()),
        (KeyAlgorithm.P384, 0x14, hashes.SHA384()),
        # A hash shorter than the field: ECDSA takes its integer value as it is.
        (KeyAlgorithm.P384, 0x14, hashes.SHA256()),
    ],
)
def test_ecdsa_signature_verifies_with_the_certificate(
    algorithm: KeyAlgorithm, alg: int, hash_algorithm: hashes.HashAlgorithm
) -> None:
    card = ready(algorithm)
    digest = hashlib.new(hash_algorithm.name, MESSAGE).digest()
    for response_first in (True, False):
        data, sw = card.transmit(short_apdu(alg, template(digest, response_first=response_first)))
        assert sw == 0x9000
        key = public_key(card)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature_from(data), digest, ec.ECDSA(Prehashed(hash_algorithm)))


def pkcs1_block(message: bytes) -> bytes:
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    return b"\x00\x01" + b"\xff" * (256 - 3 - len(digest_info)) + b"\x00" + digest_info


def test_rsa_signature_with_command_and_response_chaining() -> None:
    card = ready(KeyAlgorithm.RSA2048)
    body = template(pkcs1_block(MESSAGE))
    assert body[:4] == h("7C 82 01 06") and len(body) == 266
    # Command chaining: CLA 10 on every block but the last, 255-byte blocks.
    assert card.transmit(h("10 87 07 9A FF") + body[:255]) == (b"", 0x9000)
    data, sw = card.transmit(h("00 87 07 9A 0B") + body[255:] + h("00"))
    assert (len(data), sw) == (256, 0x6108)  # 7C 82 01 04 82 82 01 00 + 256 bytes
    rest, sw = card.transmit(h("00 C0 00 00 08"))
    assert (len(rest), sw) == (8, 0x9000)
    response = data + rest
    assert response[:8] == h("7C 82 01 04 82 82 01 00")
    key = public_key(card)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(signature_from(response), MESSAGE, padding.PKCS1v15(), hashes.SHA256())


def test_rsa_is_the_raw_operation_on_the_block_sent() -> None:
    card = ready(KeyAlgorithm.RSA2048)
    block = bytes(range(256))  # any value below the modulus, no padding check
    body = template(block)
    card.transmit(h("10 87 07 9A FF") + body[:255])
    response, sw = exchange_all(card, h("00 87 07 9A 0B") + body[255:] + h("00"))
    assert sw == 0x9000
    key = public_key(card)
    assert isinstance(key, rsa.RSAPublicKey)
    numbers = key.public_numbers()
    signature = int.from_bytes(signature_from(response), "big")
    assert pow(signature, numbers.e, numbers.n) == int.from_bytes(block, "big")


def test_signing_needs_the_pin() -> None:
    card = ready(KeyAlgorithm.P256, verify=False)
    digest = hashlib.sha256(MESSAGE).digest()
    assert card.transmit(short_apdu(0x11, template(digest))) == (b"", 0x6982)
    assert card.transmit(h("00 20 00 80 08 32 34 36 38 31 30 FF FF"))[1] == 0x9000
    assert card.transmit(short_apdu(0x11, template(digest)))[1] == 0x9000
    assert card.transmit(h("00 20 FF 80"))[1] == 0x9000
    assert card.transmit(short_apdu(0x11, template(digest))) == (b"", 0x6982)


@pytest.mark.parametrize(
    ("alg", "key"),
    [(0x07, 0x9A), (0x14, 0x9A), (0x11, 0x9C), (0x11, 0x9E), (0x11, 0x9B)],
)
def test_wrong_algorithm_or_key_reference(alg: int, key: int) -> None:
    card = ready(KeyAlgorithm.P256)
    body = template(hashlib.sha256(MESSAGE).digest())
    assert card.transmit(short_apdu(alg, body, key)) == (b"", 0x6A86)


DIGEST = hashlib.sha256(MESSAGE).digest()


@pytest.mark.parametrize(
    "body",
    [
        tlv.encode(0x7C, tlv.encode(0x81, DIGEST)),  # no 82 requested
        tlv.encode(0x7C, tlv.encode(0x82, b"\x01") + tlv.encode(0x81, DIGEST)),  # 82 not empty
        tlv.encode(0x7C, tlv.encode(0x82, b"") + tlv.encode(0x81, b"")),  # empty challenge
        tlv.encode(0x7C, tlv.encode(0x82, b"") + tlv.encode(0x85, DIGEST)),  # ECDH: not 9A
        tlv.encode(0x7D, tlv.encode(0x82, b"") + tlv.encode(0x81, DIGEST)),  # not 7C
        template(DIGEST + b"\x00"),  # longer than the P-256 field
        template(DIGEST) + b"\x00",  # trailing byte
        h("7C 10 82 00 81 20") + DIGEST[:10],  # truncated TLV
    ],
)
def test_malformed_requests(body: bytes) -> None:
    card = ready(KeyAlgorithm.P256)
    assert card.transmit(short_apdu(0x11, body)) == (b"", 0x6A80)


@pytest.mark.parametrize(
    "block",
    [b"\xff" * 256, b"\x00\x01" + b"\xff" * 253],  # not below the modulus; too short
)
def test_rsa_block_must_be_below_the_modulus_and_full_length(block: bytes) -> None:
    card = ready(KeyAlgorithm.RSA2048)
    body = template(block)
    card.transmit(bytes([0x10, 0x87, 0x07, 0x9A, 0xFF]) + body[:255])
    rest = body[255:]
    assert card.transmit(bytes([0x00, 0x87, 0x07, 0x9A, len(rest)]) + rest + b"\x00") == (
        b"",
        0x6A80,
    )


def test_an_interrupted_chain_is_dropped() -> None:
    card = ready(KeyAlgorithm.RSA2048)
    body = template(pkcs1_block(MESSAGE))
    assert card.transmit(h("10 87 07 9A FF") + body[:255]) == (b"", 0x9000)
    assert card.transmit(h("00 CB 3F FF 03 5C 01 7E 00"))[1] == 0x9000
    assert card.transmit(h("00 87 07 9A 0B") + body[255:] + h("00")) == (b"", 0x6A80)


def test_reset_drops_a_command_chain() -> None:
    card = ready(KeyAlgorithm.RSA2048)
    body = template(pkcs1_block(MESSAGE))
    card.transmit(h("10 87 07 9A FF") + body[:255])
    card.reset()
    card.transmit(h("00 A4 04 00 05 A0 00 00 03 08"))
    card.transmit(h("00 20 00 80 08 32 34 36 38 31 30 FF FF"))
    assert card.transmit(h("00 87 07 9A 0B") + body[255:] + h("00")) == (b"", 0x6A80)


def test_an_oversized_chain_is_refused() -> None:
    card = ready(KeyAlgorithm.RSA2048)
    block = h("10 87 07 9A FF") + b"\x00" * 255
    sws = [card.transmit(block)[1] for _ in range(17)]
    assert sws[:16] == [0x9000] * 16
    assert sws[16] == 0x6700
