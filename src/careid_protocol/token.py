"""The signed challenge, protocol `careid-auth:1` (DESIGN.md, "The signed challenge").

The agent signs `TBS = H(origin) || H(challenge)` with the card's slot 9A key; H is the
JOSE algorithm's hash over the exact UTF-8 bytes of each string (the challenge is hashed
as its base64url text, not decoded). Binding the origin stops a phishing page from
relaying a challenge; hashing each part separately stops boundary games between them.
The broker rebuilds TBS from its own origin and its own stored challenge.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum, unique
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.utils import CryptographyDeprecationWarning

from careid_protocol.errors import ErrorCode, message_for

FORMAT = "careid-auth:1"
CHALLENGE_BYTES = 32
CHALLENGE_LENGTH = 43  # base64url of 32 bytes, no padding
MAX_CERTIFICATE_BYTES = 8192
MAX_SIGNATURE_BYTES = 512  # RSA-4096 at most
MAX_AGENT_VERSION_LENGTH = 64
#: The largest token a broker needs to read: base64 of the limits above plus field names.
MAX_TOKEN_JSON_BYTES = 16384

_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN_FIELDS = frozenset({"format", "certificate", "algorithm", "signature", "agentVersion"})
_AGENT_VERSION_RE = re.compile(r"[\x20-\x7E]{1,64}")


class ProtocolError(ValueError):
    """A token, challenge or origin breaks the contract; `code` says how."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        super().__init__(detail or message_for(code))
        self.code = code
        self.detail = detail


@unique
class SignatureAlgorithm(StrEnum):
    """The JOSE algorithms a token may name (RFC 7518 §3.1)."""

    ES256 = "ES256"
    ES384 = "ES384"
    RS256 = "RS256"

    def hash(self) -> hashes.HashAlgorithm:
        """H for this algorithm."""
        return hashes.SHA384() if self is SignatureAlgorithm.ES384 else hashes.SHA256()


@dataclass(frozen=True, kw_only=True)
class AuthToken:
    """A parsed `careid-auth:1` token."""

    certificate: bytes
    algorithm: SignatureAlgorithm
    signature: bytes
    agent_version: str

    def to_json(self) -> dict[str, str]:
        """The wire form sent by the agent."""
        return {
            "format": FORMAT,
            "certificate": base64.b64encode(self.certificate).decode("ascii"),
            "algorithm": self.algorithm.value,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "agentVersion": self.agent_version,
        }


def _digest(data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def to_be_signed(origin: str, challenge: str, algorithm: SignatureAlgorithm) -> bytes:
    """TBS = H(origin) || H(challenge), each over the string's UTF-8 bytes."""
    h = algorithm.hash()
    return _digest(origin.encode("utf-8"), h) + _digest(challenge.encode("utf-8"), h)


def digest_to_sign(origin: str, challenge: str, algorithm: SignatureAlgorithm) -> bytes:
    """H(TBS): what the card's private-key operation is asked to sign."""
    return _digest(to_be_signed(origin, challenge, algorithm), algorithm.hash())


def is_valid_challenge(challenge: object) -> bool:
    """A challenge is 43 base64url characters (32 bytes, no padding)."""
    if not isinstance(challenge, str) or not _CHALLENGE_RE.fullmatch(challenge):
        return False
    # The last character carries 2 spare bits that must be zero, so only one text
    # encodes each challenge.
    decoded = base64.urlsafe_b64decode(challenge + "=")
    return base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") == challenge


def is_valid_origin(origin: object, *, allow_dev_http: bool = False) -> bool:
    """`https://host[:port]` exactly (no path, query, user info or trailing slash).

    `http://localhost[:port]` (and 127.0.0.1) only when `allow_dev_http` — a development
    agent talking to a development broker.
    """
    if not isinstance(origin, str) or len(origin) > 255 or origin != origin.strip():
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return False
    if not parts.hostname or origin.endswith((":", "/")):
        return False
    expected = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    if origin != expected:
        return False  # upper case, default-port tricks, IPv6 brackets and the like
    if parts.scheme == "https":
        return True
    return (
        allow_dev_http and parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")
    )


def algorithm_for_key(public_key: object) -> SignatureAlgorithm:
    """The only JOSE algorithm a token may name for this certificate key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return SignatureAlgorithm.ES256
        if isinstance(public_key.curve, ec.SECP384R1):
            return SignatureAlgorithm.ES384
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048:
        return SignatureAlgorithm.RS256
    raise ProtocolError(ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM, "unsupported key type")


def ecdsa_der_to_raw(der: bytes, algorithm: SignatureAlgorithm) -> bytes:
    """A DER ECDSA signature (as the card answers) as JOSE's fixed-size `r || s`."""
    size = 48 if algorithm is SignatureAlgorithm.ES384 else 32
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _raw_to_der(raw: bytes, algorithm: SignatureAlgorithm) -> bytes:
    size = 48 if algorithm is SignatureAlgorithm.ES384 else 32
    if len(raw) != 2 * size:
        raise ProtocolError(ErrorCode.SIGNATURE_INVALID, "wrong ECDSA signature length")
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )


def _b64(value: object, field: str, limit: int) -> bytes:
    if not isinstance(value, str) or not value or len(value) > (limit * 4) // 3 + 4:
        raise ProtocolError(ErrorCode.TOKEN_MALFORMED, f"{field} missing or too long")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(ErrorCode.TOKEN_MALFORMED, f"{field} is not base64") from exc


def parse_token(data: Mapping[str, Any]) -> AuthToken:
    """Parse a token strictly: exactly the five fields, each well-formed."""
    if not isinstance(data, Mapping):
        raise ProtocolError(ErrorCode.TOKEN_MALFORMED, "token is not a JSON object")
    if data.get("format") != FORMAT:
        # Exact match: `careid-auth:1.1` or `careid-auth:10` are other protocols.
        raise ProtocolError(ErrorCode.TOKEN_UNSUPPORTED_FORMAT, "format is not careid-auth:1")
    if set(data) != _TOKEN_FIELDS:
        raise ProtocolError(ErrorCode.TOKEN_MALFORMED, "token fields are not exactly the five")
    try:
        algorithm = SignatureAlgorithm(data["algorithm"])
    except ValueError as exc:
        raise ProtocolError(ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM, "unknown algorithm") from exc
    version = data["agentVersion"]
    if not isinstance(version, str) or not _AGENT_VERSION_RE.fullmatch(version):
        raise ProtocolError(ErrorCode.TOKEN_MALFORMED, "agentVersion malformed")
    return AuthToken(
        certificate=_b64(data["certificate"], "certificate", MAX_CERTIFICATE_BYTES),
        algorithm=algorithm,
        signature=_b64(data["signature"], "signature", MAX_SIGNATURE_BYTES),
        agent_version=version,
    )


#: What cryptography raises for a certificate it cannot read, when it loads it or when a
#: field it parses only on first use is read: not all ValueErrors. A version other than
#: v1 or v3 is `InvalidVersion`, a repeated extension `DuplicateExtension`, a general
#: name it does not know `UnsupportedGeneralNameType`, a key type it does not know
#: `UnsupportedAlgorithm`; and a serial number that is not positive is only a warning
#: (to become an error in a later release), an exception where warnings are errors.
UNREADABLE_CERTIFICATE: tuple[type[Exception], ...] = (
    ValueError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
    CryptographyDeprecationWarning,
)


def load_certificate(der: bytes) -> x509.Certificate:
    """The token's certificate, every field of it read (`read_fully`), or
    CERTIFICATE_MALFORMED."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except UNREADABLE_CERTIFICATE as exc:
        raise ProtocolError(ErrorCode.CERTIFICATE_MALFORMED, f"certificate not DER: {exc}") from exc
    return read_fully(certificate)


def read_fully(certificate: x509.Certificate) -> x509.Certificate:
    """`certificate`, once every field cryptography parses only on first use has parsed;
    or CERTIFICATE_MALFORMED.

    cryptography decodes names, extensions and the key only when they are first read.
    Read here, where the certificate is first taken in, a damaged one is refused as
    malformed instead of raising from whichever later check, or error message, happens
    to touch the damaged field first.
    """
    try:
        certificate.version  # noqa: B018
        certificate.issuer  # noqa: B018
        certificate.subject  # noqa: B018
        certificate.not_valid_before_utc  # noqa: B018
        certificate.not_valid_after_utc  # noqa: B018
        certificate.extensions  # noqa: B018
        certificate.public_key()
        serial = certificate.serial_number
    except UNREADABLE_CERTIFICATE as exc:
        raise ProtocolError(
            ErrorCode.CERTIFICATE_MALFORMED, f"certificate does not parse: {exc}"
        ) from exc
    if serial <= 0:
        # RFC 5280 §4.1.2.2 requires a positive serial; cryptography warns of one that
        # is not (the warning above) and means to refuse it in a later release.
        raise ProtocolError(ErrorCode.CERTIFICATE_MALFORMED, "serial number is not positive")
    return certificate


def verify_signature(
    token: AuthToken, certificate: x509.Certificate, origin: str, challenge: str
) -> None:
    """Check the token's signature over TBS with the certificate's key."""
    public_key = certificate.public_key()
    if algorithm_for_key(public_key) is not token.algorithm:
        raise ProtocolError(
            ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM, "algorithm does not match the key"
        )
    tbs = to_be_signed(origin, challenge, token.algorithm)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            der = _raw_to_der(token.signature, token.algorithm)
            public_key.verify(der, tbs, ec.ECDSA(token.algorithm.hash()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(token.signature, tbs, padding.PKCS1v15(), token.algorithm.hash())
        else:  # pragma: no cover - algorithm_for_key already refused it
            raise ProtocolError(ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM)
    except InvalidSignature as exc:
        raise ProtocolError(ErrorCode.SIGNATURE_INVALID, "signature does not verify") from exc


def verify_token(token: Mapping[str, Any], origin: str, challenge: str) -> x509.Certificate:
    """Parse and verify a token for this origin and challenge; return its certificate.

    Only the format and signature: the broker still validates the certificate chain,
    revocation, and that the challenge is its own, unexpired and unused.
    """
    parsed = parse_token(token)
    certificate = load_certificate(parsed.certificate)
    verify_signature(parsed, certificate, origin, challenge)
    return certificate
