"""The key types the broker accepts in certificates, CRLs and OCSP answers, pure.

One rule for every key in the trust path (card, CAs, OCSP responders): ECDSA on P-256
or P-384, or RSA of at least 2048 bits. These are what PIV cards and the NHS PKI use;
anything else (DSA, EdDSA, small RSA, other curves) is refused by name rather than
passed to cryptography, whose support for the older ones is deprecated.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SupportedPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: The ECDSA curves accepted (SP 800-78-4 Table 3-1's PIV curves).
SUPPORTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
#: The smallest RSA modulus accepted, in bits (SP 800-78-4 §3.1).
MIN_RSA_BITS = 2048


class UnsupportedKey(Exception):
    """A key of a type or size the broker does not accept; the message names it."""


def describe_key(key: object) -> str:
    """The key's type and size in words, for the operator's log."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__.removesuffix("PublicKey").lstrip("_") or "unknown"


def supported_key(certificate: x509.Certificate) -> SupportedPublicKey:
    """The certificate's public key, or UnsupportedKey when it is not one we accept."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, SUPPORTED_CURVES):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    raise UnsupportedKey(
        f"{certificate.subject.rfc4514_string()!r} has a {describe_key(key)} key; only EC"
        f" P-256, EC P-384 and RSA of {MIN_RSA_BITS} bits or more are accepted"
    )
