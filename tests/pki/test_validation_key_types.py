"""Only EC P-256/P-384 and RSA ≥ 2048 keys are accepted, in cards, CAs, CRLs and OCSP."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pki_validation_support import NOW, START, PkiEnv, der, key_usage_for

from careid_broker.errors import CertificateKeyUnsupportedError
from careid_broker.pki import CertificateValidator, PkiConfig, UrllibFetcher
from careid_broker.pki.crl_checks import CrlProblem, verify_crl
from careid_broker.pki.keys import UnsupportedKey, supported_key
from careid_broker.pki.ocsp_response import InvalidOcspResponse, verify_response
from careid_protocol.errors import ErrorCode


def _key(kind: str) -> CertificateIssuerPrivateKeyTypes:
    match kind:
        case "p256":
            return ec.generate_private_key(ec.SECP256R1())
        case "p384":
            return ec.generate_private_key(ec.SECP384R1())
        case "p521":
            return ec.generate_private_key(ec.SECP521R1())
        case "secp256k1":
            return ec.generate_private_key(ec.SECP256K1())
        case "rsa1024":
            return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (it must be refused)
        case "rsa2048":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case "rsa3072":
            return rsa.generate_private_key(public_exponent=65537, key_size=3072)
        case "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        case "ed448":
            return ed448.Ed448PrivateKey.generate()
    raise AssertionError(kind)


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _ca(key: CertificateIssuerPrivateKeyTypes, name: str = "Odd Key CA") -> x509.Certificate:
    """A self-signed CA certificate for `key`, valid around NOW."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public: CertificatePublicKeyTypes = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _hash_for(key))
    )


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048", "rsa3072"])
def test_supported_keys_are_accepted(kind: str) -> None:
    ca = _ca(_key(kind))
    assert supported_key(ca).public_numbers() == ca.public_key().public_numbers()


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("p521", "EC secp521r1"),
        ("secp256k1", "EC secp256k1"),
        ("rsa1024", "RSA-1024"),
        ("ed25519", "Ed25519"),
        ("ed448", "Ed448"),
    ],
)
def test_other_keys_are_refused_by_name(kind: str, words: str) -> None:
    with pytest.raises(UnsupportedKey) as caught:
        supported_key(_ca(_key(kind)))
    assert f"has a {words} key" in str(caught.value)
    assert "P-256" in str(caught.value)


@pytest.mark.parametrize("kind", ["p521", "ed25519", "rsa1024"])
def test_a_card_with_an_unsupported_key_is_refused_with_its_own_code(
    env: PkiEnv, kind: str
) -> None:
    card = env.craft(subject_key=_key(kind).public_key())
    with pytest.raises(CertificateKeyUnsupportedError) as caught:
        env.validator(revocation="crl").validate(der(card))
    assert caught.value.code is ErrorCode.CERTIFICATE_KEY_UNSUPPORTED
    assert "Crafted Card" in (caught.value.detail or "")


def test_a_ca_with_an_unsupported_key_is_refused_even_when_the_chain_verifies(
    tmp_path: Path,
) -> None:
    # P-521 is allowed by cryptography's web-PKI verifier, so only our rule stops it.
    root_key = _key("p521")
    root = _ca(root_key)
    card_key = _key("p256")
    card = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "Alex Morgan"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, "555000000123"),
                ]
            )
        )
        .issuer_name(root.subject)
        .public_key(card_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(key_usage_for(digital_signature=True), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    config = PkiConfig.from_mapping(
        {"trust_anchors": ["root.pem"], "revocation": "crl"}, base_dir=tmp_path
    )
    validator = CertificateValidator(config, clock=lambda: START, http=UrllibFetcher())
    with pytest.raises(CertificateKeyUnsupportedError) as caught:
        validator.validate(der(card))
    assert "Odd Key CA" in (caught.value.detail or "")
    assert "EC secp521r1" in (caught.value.detail or "")


def test_a_crl_from_an_issuer_with_an_unsupported_key_is_not_used() -> None:
    key = _key("ed25519")
    issuer = _ca(key)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(hours=24))
        .sign(key, None)
    )
    with pytest.raises(CrlProblem) as caught:
        verify_crl(crl, issuer, now=START, skew=timedelta(minutes=5))
    assert "issuer key cannot be used" in str(caught.value)
    assert "Ed25519" in str(caught.value)


def test_an_ocsp_answer_signed_with_an_unsupported_key_is_not_used() -> None:
    key = _key("ed25519")
    issuer = _ca(key)
    card = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alex Morgan")]))
        .issuer_name(issuer.subject)
        .public_key(_key("p256").public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(key, None)
    )
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=card,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        .sign(key, None)
    )
    with pytest.raises(InvalidOcspResponse) as caught:
        verify_response(
            response.public_bytes(serialization.Encoding.DER),
            certificate=card,
            issuer=issuer,
            nonce=None,
            now=START,
            skew=timedelta(minutes=5),
            max_age=timedelta(hours=1),
        )
    assert "responder's key cannot be used" in str(caught.value)
