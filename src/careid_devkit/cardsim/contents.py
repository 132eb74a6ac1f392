"""What the virtual card holds, built once from a card profile: data objects and the 9A key.

Everything here is checked when the card is built, so a broken profile is refused with a
clear message up front instead of producing odd status words mid-sign-in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.codes import DevkitCode, message_for
from careid_protocol import tlv
from careid_protocol.piv import (
    PIV_AID,
    PIV_RID,
    TAG_CERT_INFO,
    TAG_CERTIFICATE,
    TAG_DATA_OBJECT,
    TAG_ERROR_DETECTION,
    Algorithm,
    DataObject,
)

#: Application property template answered to SELECT (SP 800-73-4 Part 2 §3.1.1, Part 1
#: Table 3): the AID's PIX and the coexistent tag allocation authority (the NIST RID). No
#: `AC` algorithm list: OpenSC would then register only the algorithms listed there.
SELECT_TEMPLATE = tlv.encode(
    0x61, tlv.encode(0x4F, PIV_AID[len(PIV_RID) :]) + tlv.encode(0x79, tlv.encode(0x4F, PIV_RID))
)

#: Discovery object (SP 800-73-4 Part 1 §3.3.2): PIV AID and PIN usage policy 40 00 (the
#: PIV PIN satisfies the access rules; no global PIN). Without it OpenSC re-SELECTs at every
#: transaction to learn whether PIV is still the current application.
DISCOVERY_OBJECT = tlv.encode(
    DataObject.DISCOVERY, tlv.encode(0x4F, PIV_AID) + tlv.encode(0x5F2F, b"\x40\x00")
)

#: The GSC-RID that opens a CCC card identifier (SP 800-73-4 Part 1 Table 8).
_GSC_RID = bytes.fromhex("A000000116")


class CardProfileError(ValueError):
    """The card profile cannot back a card (bad key, certificate, PIN, CHUID or counters)."""

    code = DevkitCode.DEVKIT_CARD_PROFILE_INVALID

    def __init__(self, detail: str) -> None:
        super().__init__(f"{message_for(self.code)} ({detail})")
        self.detail = detail


def is_pin_value(value: str) -> bool:
    """Whether `value` is a PIV PIN or PUK: 6 to 8 ASCII digits (SP 800-73-4 Part 2 §2.4.3)."""
    return isinstance(value, str) and 6 <= len(value) <= 8 and value.isascii() and value.isdigit()


def pin_block(value: str) -> bytes:
    """The 8-byte reference data block: ASCII padded with FF."""
    return value.encode("ascii").ljust(8, b"\xff")


def pin_from_block(block: bytes) -> str | None:
    """The PIN in an 8-byte FF-padded block, or None when the block is not a valid PIN."""
    if len(block) != 8:
        return None
    value = block.rstrip(b"\xff")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if is_pin_value(text) else None


def certificate_object(der: bytes) -> bytes:
    """An X.509 certificate data object: `53 { 70 cert, 71 00 (not compressed), FE }`."""
    body = (
        tlv.encode(TAG_CERTIFICATE, der)
        + tlv.encode(TAG_CERT_INFO, b"\x00")
        + tlv.encode(TAG_ERROR_DETECTION, b"")
    )
    return tlv.encode(TAG_DATA_OBJECT, body)


def ccc_object(card_guid: bytes) -> bytes:
    """A Card Capability Container (SP 800-73-4 Part 1 §3.1.1, Table 8).

    The CCC is mandatory on a PIV card, so the virtual card serves one. OpenSC only looks
    at it to spot dual CAC/PIV cards; none of these values makes it treat the card as one.
    Card identifier: GSC-RID, manufacturer FF (unassigned), card type 00, the first 14
    bytes of the card GUID as card id.
    """
    card_identifier = _GSC_RID + b"\xff\x00" + card_guid[:14].ljust(14, b"\x00")
    elements = [
        (0xF0, card_identifier),
        (0xF1, b"\x21"),  # capability container version
        (0xF2, b"\x21"),  # capability grammar version
        (0xF3, b""),  # applications card URL: none
        (0xF4, b"\x00"),  # PKCS#15: not supported
        (0xF5, b"\x10"),  # registered data model number
        (0xF6, b""),  # access control rule table
        (0xF7, b""),  # card APDUs
        (0xFA, b""),  # redirection tag
        (0xFB, b""),  # capability tuples
        (0xFC, b""),  # status tuples
        (0xFD, b""),  # next CCC
        (0xFE, b""),  # error detection code
    ]
    return tlv.encode(TAG_DATA_OBJECT, b"".join(tlv.encode(t, v) for t, v in elements))


class SlotKey:
    """The PIV Authentication key (slot 9A) and the raw operation the card performs."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        self._public = key.public_key()
        self._operation: Callable[[bytes], bytes]
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size != 2048:
                raise CardProfileError(f"RSA key of {key.key_size} bits; the card has RSA-2048")
            self.algorithm = Algorithm.RSA_2048
            self._operation = functools.partial(_rsa_raw, key.private_numbers())
        elif isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            p256 = isinstance(key.curve, ec.SECP256R1)
            self.algorithm = Algorithm.ECC_P256 if p256 else Algorithm.ECC_P384
            self._operation = functools.partial(_ecdsa, key)
        else:
            raise CardProfileError(f"EC curve {key.curve.name} is not P-256 or P-384")

    def public_key_der(self) -> bytes:
        """The SubjectPublicKeyInfo, to match against the certificate."""
        return self._public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        """The card's answer to a challenge; ValueError when the data is malformed (6A80)."""
        return self._operation(data)


def _ecdsa(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    # SP 800-73-4 Part 2 §3.2.4 / SP 800-78-4: for ECC the host sends the hash. A hash
    # shorter than the field is taken as its integer value, which is what left-padding
    # with zeros to the field length gives (so SHA-256 on P-384 works as ECDSA defines).
    size = (key.curve.key_size + 7) // 8
    if not 0 < len(data) <= size:
        raise ValueError("ECDSA input must be 1 to field-size bytes")
    digest = hashes.SHA256() if size == 32 else hashes.SHA384()
    return key.sign(data.rjust(size, b"\x00"), ec.ECDSA(Prehashed(digest)))


def _rsa_raw(numbers: rsa.RSAPrivateNumbers, data: bytes) -> bytes:
    # PIV RSA is the bare private-key operation on a block the host has already padded
    # (SP 800-73-4 Part 2 §3.2.4). cryptography has no raw RSA signing, so compute it
    # here with the CRT (about four times faster than pow(m, d, n)).
    n = numbers.public_numbers.n
    size = (n.bit_length() + 7) // 8
    if len(data) != size:
        raise ValueError("RSA input must be exactly the modulus length")
    m = int.from_bytes(data, "big")
    if m >= n:
        raise ValueError("RSA input is not smaller than the modulus")
    s_p = pow(m, numbers.dmp1, numbers.p)
    s_q = pow(m, numbers.dmq1, numbers.q)
    s = s_q + numbers.q * ((numbers.iqmp * (s_p - s_q)) % numbers.p)
    return s.to_bytes(size, "big")


_EXPECTED_ALGORITHM = {
    KeyAlgorithm.P256: Algorithm.ECC_P256,
    KeyAlgorithm.P384: Algorithm.ECC_P384,
    KeyAlgorithm.RSA2048: Algorithm.RSA_2048,
}


@dataclass(frozen=True, kw_only=True)
class CardContents:
    """The card's fixed contents: the 9A key and each readable data object, encoded."""

    key: SlotKey
    objects: dict[int, bytes]
    """GET DATA answers by object tag (the bytes the card returns, before chaining)."""

    @classmethod
    def from_profile(cls, profile: CardProfile) -> CardContents:
        """Build and cross-check the contents; CardProfileError names what is wrong."""
        _check_secrets_and_counters(profile)
        try:
            private_key = serialization.load_pem_private_key(
                profile.private_key_pem.encode("ascii"), password=None
            )
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise CardProfileError("the private key is not an unencrypted PEM key") from exc
        if not isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CardProfileError("the private key is neither EC nor RSA")
        key = SlotKey(private_key)
        if key.algorithm != _EXPECTED_ALGORITHM.get(profile.algorithm):
            raise CardProfileError(f"the key does not match algorithm {profile.algorithm}")
        try:
            cert = x509.load_pem_x509_certificate(profile.certificate_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise CardProfileError("the certificate is not a PEM X.509 certificate") from exc
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if spki != key.public_key_der():
            raise CardProfileError("the certificate is not for the card's private key")
        try:
            chuid = bytes.fromhex(profile.chuid_hex)
            tlv.parse(chuid)
            guid = bytes.fromhex(profile.card_guid_hex)
        except ValueError as exc:  # TlvError is a ValueError
            raise CardProfileError("the CHUID or card GUID is not valid hex BER-TLV") from exc
        if len(guid) != 16:
            raise CardProfileError("the card GUID is not 16 bytes")
        objects = {
            DataObject.DISCOVERY: DISCOVERY_OBJECT,
            DataObject.CHUID: tlv.encode(TAG_DATA_OBJECT, chuid),
            DataObject.CCC: ccc_object(guid),
            DataObject.AUTHENTICATION_CERTIFICATE: certificate_object(
                cert.public_bytes(serialization.Encoding.DER)
            ),
        }
        return cls(key=key, objects={int(tag): value for tag, value in objects.items()})


def _check_secrets_and_counters(profile: CardProfile) -> None:
    # A hand-edited JSON file can hold any types; name the field rather than crash later.
    for name in ("private_key_pem", "certificate_pem", "chuid_hex", "card_guid_hex"):
        if not isinstance(getattr(profile, name), str):
            raise CardProfileError(f"{name} must be a string")
    for name in ("pin_retries_left", "pin_retries_max", "puk_retries_left", "puk_retries_max"):
        value = getattr(profile, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CardProfileError(f"{name} must be a whole number")
    if not is_pin_value(profile.pin):
        raise CardProfileError("the PIN must be 6 to 8 digits")
    if not is_pin_value(profile.puk):
        raise CardProfileError("the PUK must be 6 to 8 digits")
    for name, left, most in (
        ("PIN", profile.pin_retries_left, profile.pin_retries_max),
        ("PUK", profile.puk_retries_left, profile.puk_retries_max),
    ):
        # 63Cx carries the count in four bits, so a card cannot report more than 15.
        if not 1 <= most <= 15 or not 0 <= left <= most:
            raise CardProfileError(f"the {name} retry counters are out of range")
