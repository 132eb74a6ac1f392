"""PIV data objects and signature inputs: pure functions over bytes, tested on hex vectors.

Parsing never trusts the card: malformed objects raise typed `CardError`s, never
`IndexError` or a bare `ValueError` from deep inside a library.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from careid_agent.errors import (
    CertificateMalformedError,
    MalformedDataError,
    NoCertificateError,
    PinFormatError,
    UnsupportedKeyError,
)
from careid_protocol import tlv, token
from careid_protocol.piv import (
    TAG_CERT_INFO,
    TAG_CERTIFICATE,
    TAG_CHALLENGE,
    TAG_DATA_OBJECT,
    TAG_DYNAMIC_AUTH_TEMPLATE,
    TAG_RESPONSE,
    Algorithm,
    DataObject,
    KeyReference,
)

#: Certificate object of each key slot (SP 800-73-4 Part 1 Table 3).
CERTIFICATE_OBJECTS: dict[int, DataObject] = {
    KeyReference.PIV_AUTHENTICATION: DataObject.AUTHENTICATION_CERTIFICATE,
    KeyReference.DIGITAL_SIGNATURE: DataObject.SIGNATURE_CERTIFICATE,
    KeyReference.KEY_MANAGEMENT: DataObject.KEY_MANAGEMENT_CERTIFICATE,
    KeyReference.CARD_AUTHENTICATION: DataObject.CARD_AUTHENTICATION_CERTIFICATE,
}

#: CertInfo bit 0: the certificate is gzip-compressed (SP 800-73-4 Part 1 Table 10).
CERT_INFO_COMPRESSED = 0x01
#: A certificate inflating past this is not a certificate but a decompression bomb.
MAX_CERTIFICATE_BYTES = 32 * 1024

PIN_MIN = 4
PIN_MAX = 8
PIN_PAD = 0xFF

#: DER prefixes of DigestInfo for PKCS#1 v1.5 signatures (RFC 8017 §9.2, note 1).
DIGEST_INFO_PREFIXES: dict[str, bytes] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

_EC_FIELD_BYTES = {Algorithm.ECC_P256: 32, Algorithm.ECC_P384: 48}
_RSA_BYTES = {Algorithm.RSA_2048: 256}

_CHUID_FASC_N = 0x30
_CHUID_GUID = 0x34
_CHUID_EXPIRY = 0x35
_CHUID_CARDHOLDER_UUID = 0x36


@dataclass(frozen=True, kw_only=True)
class Chuid:
    """The Card Holder Unique Identifier (SP 800-73-4 Part 1 §3.1.2, Table 9)."""

    fasc_n: bytes
    guid: bytes
    expiry: dt.date
    cardholder_uuid: bytes | None = None

    @property
    def card_id(self) -> str:
        """The GUID as a UUID string: the card's identity (OpenSC uses it as the serial)."""
        return str(uuid.UUID(bytes=self.guid))


@dataclass(frozen=True, kw_only=True)
class PinStatus:
    """What the PIN status query (VERIFY with no data) says."""

    verified: bool
    retries_left: int | None
    """Tries before the PIN blocks; None when the card only said "verified"."""

    @property
    def blocked(self) -> bool:
        """Whether no tries are left."""
        return self.retries_left == 0


def _outer_value(response: bytes) -> bytes:
    """The value of the leading 53 element (anything after it is ignored)."""
    try:
        first = next(tlv.iter_tlv(response))
    except (StopIteration, tlv.TlvError) as exc:
        raise MalformedDataError() from exc
    if first.tag != TAG_DATA_OBJECT:
        raise MalformedDataError()
    return first.value


def parse_certificate_object(response: bytes) -> bytes:
    """The DER certificate inside a certificate data object `53 { 70 71 FE }`."""
    try:
        elements = {item.tag: item.value for item in tlv.iter_tlv(_outer_value(response))}
    except (tlv.TlvError, MalformedDataError) as exc:
        raise CertificateMalformedError() from exc
    certificate = elements.get(TAG_CERTIFICATE, b"")
    if not certificate:
        raise NoCertificateError()
    info = elements.get(TAG_CERT_INFO, b"\x00")
    if info and info[0] & CERT_INFO_COMPRESSED:
        certificate = _gunzip(certificate)
    return certificate


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header expected
    try:
        out = inflater.decompress(data, MAX_CERTIFICATE_BYTES)
    except zlib.error as exc:
        raise CertificateMalformedError() from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise CertificateMalformedError()
    return out


def load_certificate(der: bytes) -> x509.Certificate:
    """Parse a DER certificate read from the card, every field of it (as the broker will:
    `careid_protocol.token.load_certificate`)."""
    try:
        return token.load_certificate(der)
    except token.ProtocolError as exc:
        raise CertificateMalformedError() from exc


def parse_chuid(response: bytes) -> Chuid:
    """The CHUID from its GET DATA response `53 { 30 FASC-N, 34 GUID, 35 expiry, … }`."""
    try:
        elements: dict[int, bytes] = {}
        for item in tlv.iter_tlv(_outer_value(response)):
            elements.setdefault(item.tag, item.value)
    except tlv.TlvError as exc:
        raise MalformedDataError() from exc
    fasc_n = elements.get(_CHUID_FASC_N)
    guid = elements.get(_CHUID_GUID)
    expiry = elements.get(_CHUID_EXPIRY)
    if fasc_n is None or guid is None or len(guid) != 16 or expiry is None:
        raise MalformedDataError()
    try:
        expiry_date = dt.datetime.strptime(expiry.decode("ascii"), "%Y%m%d").date()
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedDataError() from exc
    return Chuid(
        fasc_n=fasc_n,
        guid=guid,
        expiry=expiry_date,
        cardholder_uuid=elements.get(_CHUID_CARDHOLDER_UUID) or None,
    )


def algorithm_for_key(key: CertificatePublicKeyTypes) -> Algorithm:
    """The PIV algorithm of a certificate's key: P-256 → 11, P-384 → 14, RSA-2048 → 07."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return Algorithm.ECC_P256
        if isinstance(key.curve, ec.SECP384R1):
            return Algorithm.ECC_P384
    elif isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048:
        return Algorithm.RSA_2048
    raise UnsupportedKeyError()


def describe_algorithm(algorithm: Algorithm) -> str:
    """A name for people: "ECC P-256", "ECC P-384", "RSA 2048"."""
    return {
        Algorithm.ECC_P256: "ECC P-256",
        Algorithm.ECC_P384: "ECC P-384",
        Algorithm.RSA_2048: "RSA 2048",
        Algorithm.RSA_1024: "RSA 1024",
        Algorithm.RSA_3072: "RSA 3072",
    }[algorithm]


def encode_pin(pin: str | bytes | bytearray) -> bytearray:
    """The 8-byte VERIFY body: the PIN's ASCII bytes padded with FF (SP 800-73-4 Part 2 §2.4.3).

    PIV specifies digits; issuers (and YubiKeys) accept any printable ASCII, so that is
    what we allow. Nothing about the PIN goes into the error.
    """
    if isinstance(pin, str):
        try:
            raw = bytearray(pin.encode("ascii"))
        except UnicodeEncodeError:
            raise PinFormatError() from None
    else:
        raw = bytearray(pin)
    try:
        if not PIN_MIN <= len(raw) <= PIN_MAX or any(not 0x20 <= b <= 0x7E for b in raw):
            raise PinFormatError()
        padded = bytearray(PIN_MAX)
        padded[: len(raw)] = raw
        padded[len(raw) :] = bytes([PIN_PAD]) * (PIN_MAX - len(raw))
        return padded
    finally:
        raw[:] = bytes(len(raw))


def ecdsa_input(digest: bytes, algorithm: Algorithm) -> bytes:
    """The hash as the card wants it: exactly the field size.

    ECDSA uses the leftmost field-size bits of a longer hash (FIPS 186-4 §6.4) and the
    integer value of a shorter one, so truncating or left-padding with zeros signs the
    same value while satisfying cards that insist on the exact length.
    """
    size = _EC_FIELD_BYTES[algorithm]
    return digest[:size].rjust(size, b"\x00")


def pkcs1_v15_block(digest: bytes, hash_algorithm: hashes.HashAlgorithm, size: int) -> bytes:
    """EMSA-PKCS1-v1_5 encoding `00 01 FF…FF 00 DigestInfo` (RFC 8017 §9.2).

    A PIV card does a raw RSA private-key operation, so the host builds the padding.
    """
    prefix = DIGEST_INFO_PREFIXES.get(hash_algorithm.name)
    if prefix is None:
        raise ValueError(f"no DigestInfo for {hash_algorithm.name}")
    if len(digest) != hash_algorithm.digest_size:
        raise ValueError("digest length does not match the hash algorithm")
    digest_info = prefix + digest
    padding = size - len(digest_info) - 3
    if padding < 8:
        raise ValueError("key too small for this digest")
    return b"\x00\x01" + b"\xff" * padding + b"\x00" + digest_info


def signature_input(
    digest: bytes, algorithm: Algorithm, hash_algorithm: hashes.HashAlgorithm
) -> bytes:
    """What GENERAL AUTHENTICATE must sign for `digest` with a key of `algorithm`."""
    if len(digest) != hash_algorithm.digest_size:
        raise ValueError("digest length does not match the hash algorithm")
    if algorithm in _EC_FIELD_BYTES:
        return ecdsa_input(digest, algorithm)
    if algorithm in _RSA_BYTES:
        return pkcs1_v15_block(digest, hash_algorithm, _RSA_BYTES[algorithm])
    raise UnsupportedKeyError()


def auth_template(challenge: bytes) -> bytes:
    """`7C { 82 00, 81 <challenge> }`: ask the card for a response over the challenge."""
    return tlv.encode(
        TAG_DYNAMIC_AUTH_TEMPLATE,
        tlv.encode(TAG_RESPONSE, b"") + tlv.encode(TAG_CHALLENGE, challenge),
    )


def parse_auth_response(response: bytes) -> bytes:
    """The signature inside `7C { 82 <signature> }`."""
    try:
        template = tlv.parse_single(response, TAG_DYNAMIC_AUTH_TEMPLATE)
        signature = tlv.find(template, TAG_RESPONSE)
    except tlv.TlvError as exc:
        raise MalformedDataError() from exc
    if not signature:
        raise MalformedDataError()
    return signature


def check_signature_shape(signature: bytes, algorithm: Algorithm) -> bytes:
    """The card's signature if it has the right form: canonical DER ECDSA, or a full
    RSA block. A card that answers garbage fails here, not at the broker."""
    if algorithm in _EC_FIELD_BYTES:
        try:
            r, s = decode_dss_signature(signature)
        except ValueError as exc:
            raise MalformedDataError() from exc
        bits = _EC_FIELD_BYTES[algorithm] * 8
        if not (0 < r and 0 < s and r.bit_length() <= bits and s.bit_length() <= bits):
            raise MalformedDataError()
        return encode_dss_signature(r, s)
    if algorithm in _RSA_BYTES:
        size = _RSA_BYTES[algorithm]
        if not 0 < len(signature) <= size or not any(signature):
            raise MalformedDataError()
        # A card may drop leading zero bytes; the signature is defined as exactly k bytes.
        return signature.rjust(size, b"\x00")
    raise UnsupportedKeyError()
