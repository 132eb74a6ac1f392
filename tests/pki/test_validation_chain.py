"""Chain, validity, usage, policies and identity, against a real development PKI."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_validation_support import CLIENT_AUTH, DEV_POLICY, NOW, START, PkiEnv, der, key_usage_for

from careid_broker.errors import (
    BrokerError,
    CertificateExpiredError,
    CertificateMalformedError,
    CertificateNotYetValidError,
    CertificatePolicyError,
    CertificateUntrustedError,
    CertificateUsageError,
    IdentityMissingError,
)
from careid_broker.pki import RevocationSource
from careid_broker.pki.checks import check_issuers_valid
from careid_devkit.pki import init_pki
from careid_protocol.errors import ErrorCode


@pytest.mark.parametrize("algorithm", ["p256", "p384", "rsa2048"])
def test_a_good_card_of_each_key_type_is_accepted(env: PkiEnv, algorithm: str) -> None:
    cert = env.issue(algorithm=algorithm, name="Alex Morgan", uuid="555000000001")
    result = env.validator().validate(der(cert))

    assert result.certificate == cert
    assert result.uuid == "555000000001"
    assert result.holder_name == "Alex Morgan"
    assert result.issuer_dn == env.pki.issuing_certificate.subject.rfc4514_string()
    assert result.serial_hex == f"{cert.serial_number:X}"
    assert result.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert result.chain == (cert, env.pki.issuing_certificate, env.pki.root_certificate)
    assert result.revocation_method is RevocationSource.OCSP
    assert result.revocation is not None and result.revocation.location == env.pki.urls.ocsp
    assert not result.soft_fail_used and result.soft_fail_reason is None


def test_a_parsed_certificate_object_is_accepted_too(env: PkiEnv) -> None:
    cert = env.issue()
    assert env.validator().validate(cert).certificate == cert


@pytest.mark.parametrize("blob", [b"", b"\x30\x03\x02\x01\x01", b"not DER at all", b"\x30" * 20000])
def test_bytes_that_are_no_certificate_are_malformed(env: PkiEnv, blob: bytes) -> None:
    with pytest.raises(CertificateMalformedError) as caught:
        env.validator().validate(blob)
    assert caught.value.code is ErrorCode.CERTIFICATE_MALFORMED


def test_an_expired_card_is_expired_not_untrusted(env: PkiEnv) -> None:
    cert = env.issue(not_before=NOW - timedelta(days=3), not_after=NOW - timedelta(days=1))
    with pytest.raises(CertificateExpiredError) as caught:
        env.validator().validate(cert)
    assert caught.value.code is ErrorCode.CERTIFICATE_EXPIRED
    assert "expired at" in (caught.value.detail or "")


def test_a_card_not_yet_valid_beyond_the_skew_is_refused(env: PkiEnv) -> None:
    cert = env.issue(not_before=START + timedelta(minutes=6), not_after=NOW + timedelta(days=9))
    with pytest.raises(CertificateNotYetValidError) as caught:
        env.validator().validate(cert)
    assert caught.value.code is ErrorCode.CERTIFICATE_NOT_YET_VALID


def test_a_card_not_yet_valid_within_the_skew_is_accepted(env: PkiEnv) -> None:
    # A CA clock two minutes ahead of ours: inside the default five-minute skew.
    cert = env.issue(not_before=START + timedelta(minutes=2), not_after=NOW + timedelta(days=9))
    assert env.validator().validate(cert).uuid

    # ... and refused when the deployment allows no skew.
    with pytest.raises(CertificateNotYetValidError):
        env.validator(max_clock_skew_seconds=0).validate(cert)


def test_a_card_expired_within_the_skew_is_accepted_and_just_beyond_it_refused(
    env: PkiEnv,
) -> None:
    cert = env.issue(not_before=NOW - timedelta(days=9), not_after=START - timedelta(minutes=4))
    assert env.validator().validate(cert).uuid
    env.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(CertificateExpiredError):
        env.validator().validate(cert)


def test_the_validity_boundaries_are_inclusive(env: PkiEnv) -> None:
    cert = env.issue(not_before=NOW - timedelta(days=1), not_after=START)
    assert env.validator(max_clock_skew_seconds=0).validate(cert).uuid
    env.clock.advance(timedelta(seconds=1))
    with pytest.raises(CertificateExpiredError):
        env.validator(max_clock_skew_seconds=0).validate(cert)


def test_a_card_without_client_auth_is_a_usage_error(env: PkiEnv) -> None:
    cert = env.issue(client_auth=False)  # the devkit gives it emailProtection only
    with pytest.raises(CertificateUsageError) as caught:
        env.validator().validate(cert)
    assert caught.value.code is ErrorCode.CERTIFICATE_USAGE
    assert "clientAuth" in (caught.value.detail or "")


def test_a_card_without_digital_signature_is_a_usage_error(env: PkiEnv) -> None:
    cert = env.craft(key_usage=key_usage_for(key_encipherment=True))
    with pytest.raises(CertificateUsageError) as caught:
        env.validator(revocation="crl").validate(cert)
    assert "digitalSignature" in (caught.value.detail or "")


def test_no_eku_and_no_san_are_accepted_as_real_piv_cards_may_have_neither(env: PkiEnv) -> None:
    cert = env.craft(eku=None, san=False)
    result = env.validator(revocation="crl").validate(cert)
    assert result.revocation_method is RevocationSource.CRL


def test_an_eku_with_client_auth_among_others_is_accepted(env: PkiEnv) -> None:
    smartcard_logon = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
    cert = env.craft(eku=[smartcard_logon, CLIENT_AUTH])
    assert env.validator(revocation="crl").validate(cert).uuid


def test_a_card_from_another_ca_is_untrusted(env: PkiEnv) -> None:
    other = init_pki(env.work / "other-ca", now=NOW)
    profile = other.issue_card(uuid="555000000002", name="Eve", algorithm="p256", pin="123456")
    cert = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
    with pytest.raises(CertificateUntrustedError) as caught:
        env.validator().validate(cert)
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED


def test_a_forged_issuer_name_is_untrusted(env: PkiEnv) -> None:
    # Claims our issuing CA's name and key identifier, signed with someone else's key.
    cert = env.issue(issuer_key=ec.generate_private_key(ec.SECP256R1()))
    assert cert.issuer == env.pki.issuing_certificate.subject
    with pytest.raises(CertificateUntrustedError):
        env.validator().validate(cert)


def test_without_the_intermediate_the_chain_cannot_be_built(env: PkiEnv) -> None:
    with pytest.raises(CertificateUntrustedError):
        env.validator(intermediates=[]).validate(env.issue())


def test_the_intermediate_may_itself_be_the_trust_anchor(env: PkiEnv) -> None:
    result = env.validator(trust_anchors=["issuing-ca.pem"], intermediates=[]).validate(env.issue())
    assert result.chain[-1] == env.pki.issuing_certificate


def test_a_trust_anchor_presented_as_a_card_is_untrusted(env: PkiEnv) -> None:
    with pytest.raises(CertificateUntrustedError):
        env.validator().validate(env.pki.root_certificate)


def test_an_expired_ca_is_untrusted_even_when_the_chain_time_was_clamped(env: PkiEnv) -> None:
    root = env.pki.root_certificate
    check_issuers_valid([root], START, timedelta(minutes=5))
    with pytest.raises(CertificateUntrustedError):
        check_issuers_valid(
            [root], root.not_valid_after_utc + timedelta(minutes=6), timedelta(minutes=5)
        )


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({"require_policies": [DEV_POLICY]}, True),
        ({"require_policies": ["1.2.3.4"]}, False),
        ({"require_policies": ["1.2.3.4", DEV_POLICY]}, True),
        ({"require_policies": ["1.2.3.4", DEV_POLICY], "policy_match": "all"}, False),
        ({"require_policies": [DEV_POLICY], "policy_match": "all"}, True),
        ({"disallowed_policies": [DEV_POLICY]}, False),
        ({"disallowed_policies": ["1.2.3.4"]}, True),
    ],
)
def test_required_and_disallowed_policies(
    env: PkiEnv, overrides: dict[str, Any], accepted: bool
) -> None:
    cert = env.issue()
    validator = env.validator(**overrides)
    if accepted:
        assert validator.validate(cert).uuid
    else:
        with pytest.raises(CertificatePolicyError) as caught:
            validator.validate(cert)
        assert caught.value.code is ErrorCode.CERTIFICATE_POLICY


def test_a_card_with_no_policies_fails_a_policy_requirement(env: PkiEnv) -> None:
    cert = env.craft()  # crafted cards carry no certificatePolicies
    with pytest.raises(CertificatePolicyError):
        env.validator(revocation="crl", require_policies=[DEV_POLICY]).validate(cert)


def test_the_uuid_follows_the_configured_rule(env: PkiEnv) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Sam Patel"),
            x509.NameAttribute(NameOID.USER_ID, "C-123456789012"),
        ]
    )
    cert = env.craft(subject=subject)
    with pytest.raises(IdentityMissingError) as caught:
        env.validator(revocation="crl").validate(cert)
    assert caught.value.code is ErrorCode.IDENTITY_MISSING

    rule = {"attributes": ["UID"], "pattern": "C-[0-9]{12}"}
    result = env.validator(revocation="crl", identity=rule).validate(cert)
    assert (result.uuid, result.holder_name) == ("C-123456789012", "Sam Patel")


def test_a_uuid_of_the_wrong_shape_is_no_identity(env: PkiEnv) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Not A Number"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "55500000001X"),
        ]
    )
    with pytest.raises(IdentityMissingError):
        env.validator(revocation="crl").validate(env.craft(subject=subject))


def test_trust_stops_at_revocation_and_identify_names_the_holder(env: PkiEnv) -> None:
    # A revoked card is refused by trust() itself ...
    revoked = env.issue(issuer_key=env.pki.issuing_key)  # unknown to the responder
    with pytest.raises(BrokerError) as caught:
        env.validator().trust(revoked)
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED

    # ... while a card with no UUID is trusted, and refused only when identified: the
    # card sign-in checks the token's signature in between.
    nameless = env.craft(subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "X")]))
    validator = env.validator(revocation="crl")
    trusted = validator.trust(nameless)
    assert trusted.certificate == nameless
    with pytest.raises(IdentityMissingError):
        validator.identify(trusted)
    with pytest.raises(IdentityMissingError):
        validator.validate(nameless)


def test_the_eku_check_is_ours_not_the_chain_builders(env: PkiEnv) -> None:
    # An S/MIME-only card from a trusted CA: "usage", so the user is told the right thing.
    cert = env.craft(eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    with pytest.raises(CertificateUsageError):
        env.validator(revocation="crl").validate(cert)
