"""The development PKI's certificates: CA profiles, card certificates, chain validation."""

from __future__ import annotations

import uuid as uuid_module
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import VerificationError
from pki_fixtures import NOW, PIN, card_cert, verify_chain

from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.codes import DevkitCode
from careid_devkit.pki import (
    CARD_LIFETIME,
    DEV_CARD_AUTH_POLICY_OID,
    DEV_OID_ARC,
    Pki,
    PkiError,
    expired_validity,
    init_pki,
    not_yet_valid_validity,
)

BASE_URL = "http://pki.test:5080"
ExtT = TypeVar("ExtT", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki"), base_url=BASE_URL + "/", now=NOW)


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA made the way a developer would: `pki init` on another folder."""
    return init_pki(tmp_path_factory.mktemp("other-pki"), now=NOW)


@pytest.fixture(scope="module")
def cards(dev_pki: Pki) -> dict[KeyAlgorithm, CardProfile]:
    return {
        alg: dev_pki.issue_card(
            uuid="555000000001", name="Alex Morgan", algorithm=alg, pin=PIN, now=NOW
        )
        for alg in KeyAlgorithm
    }


def _ext(cert: x509.Certificate, kind: type[ExtT]) -> x509.Extension[ExtT]:
    return cert.extensions.get_extension_for_class(kind)


def _ski(cert: x509.Certificate) -> bytes:
    value = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return value.key_identifier


def test_policy_oid_sits_under_the_projects_uuid_arc() -> None:
    arc = DEV_OID_ARC.split(".")
    assert arc[:2] == ["2", "25"] and len(arc) == 3
    assert 0 < int(arc[2]) < 2**128  # a UUID as an integer (X.667)
    assert DEV_CARD_AUTH_POLICY_OID.dotted_string == DEV_OID_ARC + ".1.1"


def test_root_ca_profile(dev_pki: Pki) -> None:
    root = dev_pki.root_certificate
    assert root.subject.rfc4514_string() == "CN=Care Identity Root CA (development)"
    assert root.issuer == root.subject
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    constraints = _ext(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(
        ca=True, path_length=1
    )
    usage = _ext(root, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert _ski(root) == x509.SubjectKeyIdentifier.from_public_key(key).digest
    assert _aki(root) == _ski(root)
    lifetime = root.not_valid_after_utc - NOW
    assert timedelta(days=365 * 20) <= lifetime < timedelta(days=365 * 20 + 10)
    assert root.not_valid_before_utc < NOW
    root.verify_directly_issued_by(root)


def test_issuing_ca_profile(dev_pki: Pki) -> None:
    issuing, root = dev_pki.issuing_certificate, dev_pki.root_certificate
    assert issuing.subject.rfc4514_string() == "CN=Care Identity Issuing CA (development)"
    assert issuing.issuer == root.subject
    key = issuing.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert _ext(issuing, x509.BasicConstraints).value == x509.BasicConstraints(
        ca=True, path_length=0
    )
    usage = _ext(issuing, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert _ski(issuing) == x509.SubjectKeyIdentifier.from_public_key(key).digest
    assert _aki(issuing) == _ski(root)
    lifetime = issuing.not_valid_after_utc - NOW
    assert timedelta(days=365 * 10) <= lifetime < timedelta(days=365 * 10 + 10)
    issuing.verify_directly_issued_by(root)


def test_ocsp_signer_profile(dev_pki: Pki) -> None:
    signer, issuing = dev_pki.ocsp_certificate, dev_pki.issuing_certificate
    assert signer.issuer == issuing.subject
    signer.verify_directly_issued_by(issuing)
    eku = _ext(signer, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert isinstance(_ext(signer, x509.OCSPNoCheck).value, x509.OCSPNoCheck)
    assert _ext(signer, x509.KeyUsage).value.digital_signature
    assert _aki(signer) == _ski(issuing)
    assert _ski(signer) == x509.SubjectKeyIdentifier.from_public_key(signer.public_key()).digest
    with pytest.raises(x509.ExtensionNotFound):
        signer.extensions.get_extension_for_class(x509.BasicConstraints)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_card_certificate_contents(
    dev_pki: Pki, cards: dict[KeyAlgorithm, CardProfile], algorithm: KeyAlgorithm
) -> None:
    profile = cards[algorithm]
    cert = card_cert(profile)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Alex Morgan"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "555000000001"
    org = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert "Development" in str(org)
    assert cert.issuer == dev_pki.issuing_certificate.subject

    key = cert.public_key()
    if algorithm is KeyAlgorithm.RSA2048:
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == {"p256": "secp256r1", "p384": "secp384r1"}[algorithm]
    private = serialization.load_pem_private_key(profile.private_key_pem.encode(), None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(*spki) == key.public_bytes(*spki)

    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_agreement)
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    policies = _ext(cert, x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [DEV_CARD_AUTH_POLICY_OID]

    (point,) = _ext(cert, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(BASE_URL + "/crl/issuing-ca.crl")]
    access = {
        (d.access_method, d.access_location.value)
        for d in _ext(cert, x509.AuthorityInformationAccess).value
    }
    assert access == {
        (AuthorityInformationAccessOID.OCSP, BASE_URL + "/ocsp"),
        (AuthorityInformationAccessOID.CA_ISSUERS, BASE_URL + "/ca/issuing-ca.crt"),
    }
    assert _ski(cert) == x509.SubjectKeyIdentifier.from_public_key(key).digest
    assert _aki(cert) == _ski(dev_pki.issuing_certificate)
    guid = uuid_module.UUID(hex=profile.card_guid_hex)
    assert guid.version == 4  # an RFC 4122 UUID, as FIPS 201 wants for the card UUID
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [guid.urn]
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == CARD_LIFETIME
    cert.verify_directly_issued_by(dev_pki.issuing_certificate)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_card_chain_validates_with_cryptography_client_verifier(
    dev_pki: Pki, cards: dict[KeyAlgorithm, CardProfile], algorithm: KeyAlgorithm
) -> None:
    cert = card_cert(cards[algorithm])
    chain = verify_chain(dev_pki, cert, NOW)
    assert chain == [cert, dev_pki.issuing_certificate, dev_pki.root_certificate]


def test_serial_numbers_are_random_positive_and_at_most_20_octets(
    cards: dict[KeyAlgorithm, CardProfile],
) -> None:
    serials = [card_cert(p).serial_number for p in cards.values()]
    assert len(set(serials)) == len(serials)
    assert all(0 < s < 2**159 for s in serials)


def test_expired_card_is_rejected_but_was_valid_before(dev_pki: Pki) -> None:
    start, end = expired_validity(NOW)
    assert end < NOW
    profile = dev_pki.issue_card(
        uuid="555000000002",
        name="Old Card",
        algorithm="p256",
        pin=PIN,
        not_before=start,
        not_after=end,
        now=NOW,
    )
    cert = card_cert(profile)
    assert cert.not_valid_after_utc == end
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_chain(dev_pki, cert, NOW)
    # Control: the same certificate chains fine inside its validity window.
    verify_chain(dev_pki, cert, start + timedelta(hours=1))


def test_not_yet_valid_card_is_rejected_until_it_starts(dev_pki: Pki) -> None:
    start, end = not_yet_valid_validity(NOW, CARD_LIFETIME)
    assert start > NOW
    profile = dev_pki.issue_card(
        uuid="555000000003",
        name="Future Card",
        algorithm="p256",
        pin=PIN,
        not_before=start,
        not_after=end,
        now=NOW,
    )
    cert = card_cert(profile)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_chain(dev_pki, cert, NOW)
    verify_chain(dev_pki, cert, start + timedelta(minutes=1))


def test_card_without_client_auth_is_rejected_by_a_client_verifier(dev_pki: Pki) -> None:
    profile = dev_pki.issue_card(
        uuid="555000000004",
        name="Mail Only",
        algorithm="p256",
        pin=PIN,
        client_auth=False,
        now=NOW,
    )
    cert = card_cert(profile)
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    with pytest.raises(VerificationError):
        verify_chain(dev_pki, cert, NOW)


def test_card_from_another_ca_is_rejected(dev_pki: Pki, other_pki: Pki) -> None:
    profile = dev_pki.issue_card(
        uuid="555000000005",
        name="Other CA",
        algorithm="p256",
        pin=PIN,
        issuer_key=other_pki.issuing_key,
        issuer_cert=other_pki.issuing_certificate,
        now=NOW,
    )
    cert = card_cert(profile)
    assert cert.issuer == other_pki.issuing_certificate.subject
    assert _aki(cert) == _ski(other_pki.issuing_certificate)
    with pytest.raises(VerificationError):
        verify_chain(dev_pki, cert, NOW)
    # Control: the other CA's own hierarchy accepts it, so only the trust anchor differs.
    assert verify_chain(other_pki, cert, NOW)[1] == other_pki.issuing_certificate
    # Not this PKI's card: nothing recorded, so its OCSP will answer "unknown".
    assert dev_pki.state().find_issued(cert.serial_number) is None


def test_forgery_in_the_issuing_cas_name_is_rejected(dev_pki: Pki, other_pki: Pki) -> None:
    profile = dev_pki.issue_card(
        uuid="555000000006",
        name="Forged",
        algorithm="p256",
        pin=PIN,
        issuer_key=other_pki.issuing_key,
        now=NOW,
    )
    cert = card_cert(profile)
    # It claims our issuing CA's name and key identifier; only the signature gives it away.
    assert cert.issuer == dev_pki.issuing_certificate.subject
    assert _aki(cert) == _ski(dev_pki.issuing_certificate)
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(dev_pki.issuing_certificate)
    with pytest.raises(VerificationError):
        verify_chain(dev_pki, cert, NOW)
    assert dev_pki.state().find_issued(cert.serial_number) is None


def test_issuer_certificate_must_match_issuer_key(dev_pki: Pki, other_pki: Pki) -> None:
    with pytest.raises(PkiError) as caught:
        dev_pki.issue_card(
            uuid="555000000007",
            name="Mismatch",
            algorithm="p256",
            pin=PIN,
            issuer_key=other_pki.issuing_key,
            issuer_cert=dev_pki.issuing_certificate,
        )
    assert caught.value.code is DevkitCode.DEVKIT_KEY_UNUSABLE
    with pytest.raises(PkiError) as caught:
        dev_pki.issue_card(
            uuid="555000000007",
            name="No key",
            algorithm="p256",
            pin=PIN,
            issuer_cert=other_pki.issuing_certificate,
        )
    assert caught.value.code is DevkitCode.DEVKIT_INVALID_ARGUMENT


def test_default_card_lifetime_never_outlives_the_issuing_ca(dev_pki: Pki) -> None:
    ca_end = dev_pki.issuing_certificate.not_valid_after_utc
    late = ca_end - timedelta(days=100)
    cert = card_cert(
        dev_pki.issue_card(uuid="555000000008", name="Late", algorithm="p256", pin=PIN, now=late)
    )
    assert cert.not_valid_after_utc == ca_end
    verify_chain(dev_pki, cert, late)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uuid", "55500000001"),
        ("uuid", "5550000000011"),
        ("uuid", "55500000000A"),
        ("uuid", "５５５０００００００01"),  # full-width digits are not ASCII digits
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 65),
        ("name", "Alex\nMorgan"),
        ("pin", "12345"),
        ("pin", "123456789"),
        ("pin", "12345a"),
        ("puk", "1234567"),
        ("puk", "abcdefgh"),
        ("algorithm", "p521"),
    ],
)
def test_invalid_card_input_is_refused_with_a_stable_code(
    dev_pki: Pki, field: str, value: str
) -> None:
    request = {"uuid": "555000000009", "name": "Alex Morgan", "algorithm": "p256", "pin": PIN}
    request[field] = value
    issued_before = len(dev_pki.state().issued)
    with pytest.raises(PkiError) as caught:
        dev_pki.issue_card(**request)  # type: ignore[arg-type]
    assert caught.value.code is DevkitCode.DEVKIT_INVALID_ARGUMENT
    assert caught.value.detail
    assert len(dev_pki.state().issued) == issued_before


def test_validity_must_end_after_it_starts(dev_pki: Pki) -> None:
    with pytest.raises(PkiError) as caught:
        dev_pki.issue_card(
            uuid="555000000009",
            name="Backwards",
            algorithm="p256",
            pin=PIN,
            not_before=NOW,
            not_after=NOW - timedelta(seconds=1),
        )
    assert caught.value.code is DevkitCode.DEVKIT_INVALID_ARGUMENT


def test_pin_and_puk_are_kept_and_default_puk_is_eight_random_digits(dev_pki: Pki) -> None:
    given = dev_pki.issue_card(
        uuid="555000000010", name="A", algorithm="p256", pin="12345678", puk="87654321"
    )
    assert (given.pin, given.puk) == ("12345678", "87654321")
    pukless = [
        dev_pki.issue_card(uuid="555000000010", name="A", algorithm="p256", pin=PIN).puk
        for _ in range(3)
    ]
    assert all(len(puk) == 8 and puk.isdigit() for puk in pukless)
    assert len(set(pukless)) > 1
    assert (given.pin_retries_left, given.puk_retries_left) == (3, 3)
    assert (given.pin_retries_max, given.puk_retries_max) == (3, 3)


def test_other_ca_made_with_init_lives_in_its_own_folder(dev_pki: Pki, other_pki: Pki) -> None:
    assert Path(other_pki.directory) != Path(dev_pki.directory)
    assert other_pki.root_certificate.subject == dev_pki.root_certificate.subject
    assert other_pki.root_certificate.public_key() != dev_pki.root_certificate.public_key()
