"""Checking a signature made over DER bytes by a certificate's key (OCSP responses)."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import SignatureAlgorithmOID

from careid_broker.pki.keys import supported_key


def key_hash(certificate: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits: an OCSP ResponderID byKey (RFC 6960 §4.2.1)."""
    # RFC 5280 §4.2.1.2 method (1) is exactly this hash, and cryptography computes it.
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def signature_is_valid(
    signer: x509.Certificate,
    *,
    signature: bytes,
    data: bytes,
    hash_algorithm: hashes.HashAlgorithm | None,
    algorithm_oid: x509.ObjectIdentifier,
) -> bool:
    """Whether `signature` over `data` was made with `signer`'s private key.

    The signer's key must be one `supported_key` accepts (UnsupportedKey otherwise).
    """
    key = supported_key(signer)
    if hash_algorithm is None:
        return False
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
            pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.AUTO)
            key.verify(signature, data, pss, hash_algorithm)
        else:
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    except InvalidSignature:
        return False
    return True
