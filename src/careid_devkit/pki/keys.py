"""Key generation, signature hashes and PEM loading for the development PKI."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.codes import DevkitCode
from careid_devkit.pki.errors import PkiError

#: The key types a PIV slot 9A key may have in this project (SP 800-78-4 Table 3-1).
CardPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_card_key(algorithm: KeyAlgorithm) -> CardPrivateKey:
    """A new key pair of the given card algorithm."""
    if algorithm is KeyAlgorithm.P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is KeyAlgorithm.P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signature_hash(
    key: CertificateIssuerPrivateKeyTypes,
) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    """The hash to sign with: matched to the curve's strength (SP 800-57), none for EdDSA."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM: demo material is meant to be read by tests and tools."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_issuer_key(data: bytes, *, source: str) -> CertificateIssuerPrivateKeyTypes:
    """A PEM private key that can sign certificates, or `PkiError(DEVKIT_KEY_UNUSABLE)`."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(
            DevkitCode.DEVKIT_KEY_UNUSABLE, f"{source} is not an unencrypted PEM private key"
        ) from exc
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise PkiError(DevkitCode.DEVKIT_KEY_UNUSABLE, f"{source} holds a key that cannot sign")
    return key


def load_certificate(data: bytes, *, source: str) -> x509.Certificate:
    """A PEM certificate, or `PkiError(DEVKIT_KEY_UNUSABLE)`."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(
            DevkitCode.DEVKIT_KEY_UNUSABLE, f"{source} is not a PEM certificate"
        ) from exc


def same_public_key(key: CertificateIssuerPrivateKeyTypes, certificate: x509.Certificate) -> bool:
    """Whether `certificate` certifies the public half of `key`."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == certificate.public_key().public_bytes(*spki)


def issuer_public_key(certificate: x509.Certificate) -> CertificateIssuerPublicKeyTypes:
    """The certificate's public key, if it is of a kind that can sign certificates."""
    key = certificate.public_key()
    if not isinstance(
        key,
        ec.EllipticCurvePublicKey
        | rsa.RSAPublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise PkiError(DevkitCode.DEVKIT_KEY_UNUSABLE, "the certificate's key cannot sign")
    return key
