"""The OCSP responder's answers (RFC 6960, RFC 8954 nonce), without HTTP."""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from pki_fixtures import (
    NOW,
    PIN,
    card_cert,
    nonce_of,
    ocsp_request_der,
    verify_ocsp_signature,
)

from careid_devkit.codes import DevkitCode
from careid_devkit.ocsp_responder import OcspResponder, decode_get_path
from careid_devkit.pki import Pki, PkiError, init_pki
from support.clock import FakeClock


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", now=NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW + timedelta(minutes=10))


@pytest.fixture
def responder(pki: Pki, clock: FakeClock) -> OcspResponder:
    return OcspResponder(pki.directory, clock=clock, response_validity=timedelta(minutes=30))


def _ask(
    responder: OcspResponder, pki: Pki, cert: x509.Certificate, **kwargs: object
) -> ocsp.OCSPResponse:
    der = ocsp_request_der(cert, pki.issuing_certificate, **kwargs)  # type: ignore[arg-type]
    response = ocsp.load_der_ocsp_response(responder.respond(der))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return response


def _check_signed_by_delegated_signer(response: ocsp.OCSPResponse, pki: Pki) -> None:
    assert response.certificates == [pki.ocsp_certificate]
    (signer,) = response.certificates
    signer.verify_directly_issued_by(pki.issuing_certificate)
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in eku
    verify_ocsp_signature(response, signer)
    ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert response.responder_key_hash == ski.digest


# SHA-1 CertIDs are what many OCSP clients still send (RFC 5019 §2.1.1); they must work.
SHA1 = hashes.SHA1()  # noqa: S303


@pytest.mark.parametrize("algorithm", [SHA1, hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_good_certificate_with_nonce_echoed(
    pki: Pki, responder: OcspResponder, clock: FakeClock, algorithm: hashes.HashAlgorithm
) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    nonce = os.urandom(32)
    response = _ask(responder, pki, cert, nonce=nonce, algorithm=algorithm)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == cert.serial_number
    assert response.hash_algorithm.name == algorithm.name
    assert nonce_of(response) == nonce
    assert response.this_update_utc == clock.now.replace(microsecond=0)
    assert response.next_update_utc == response.this_update_utc + timedelta(minutes=30)
    _check_signed_by_delegated_signer(response, pki)


def test_no_nonce_in_request_means_none_in_response(pki: Pki, responder: OcspResponder) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p384", pin=PIN))
    response = _ask(responder, pki, cert)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert nonce_of(response) is None


def test_revocation_takes_effect_without_restarting(pki: Pki, responder: OcspResponder) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="rsa2048", pin=PIN))
    assert _ask(responder, pki, cert).certificate_status is ocsp.OCSPCertStatus.GOOD
    revoked_at = NOW + timedelta(minutes=5)
    # Another Pki handle, as `careid-devkit pki revoke` in another process would use.
    Pki.open(pki.directory).revoke(uuid="555000000001", reason="keyCompromise", now=revoked_at)
    response = _ask(responder, pki, cert, nonce=b"n" * 16)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert nonce_of(response) == b"n" * 16
    _check_signed_by_delegated_signer(response, pki)


def test_revoked_without_a_reason_has_no_reason(pki: Pki, responder: OcspResponder) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    pki.revoke(uuid="555000000001", now=NOW)
    response = _ask(responder, pki, cert)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is None


def test_serial_this_ca_never_issued_is_unknown(
    pki: Pki, responder: OcspResponder, tmp_path: Path
) -> None:
    other = init_pki(tmp_path / "other", now=NOW)
    forged = card_cert(
        pki.issue_card(
            uuid="555000000001", name="F", algorithm="p256", pin=PIN, issuer_key=other.issuing_key
        )
    )
    response = _ask(responder, pki, forged, nonce=b"x" * 20)
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert nonce_of(response) == b"x" * 20
    _check_signed_by_delegated_signer(response, pki)


def test_request_about_another_issuer_is_unknown(
    pki: Pki, responder: OcspResponder, tmp_path: Path
) -> None:
    other = init_pki(tmp_path / "other", now=NOW)
    foreign = card_cert(other.issue_card(uuid="555000000001", name="O", algorithm="p256", pin=PIN))
    # Same serial as one we issued would be, but the issuer hashes name the other CA.
    der = ocsp_request_der(foreign, other.issuing_certificate)
    response = ocsp.load_der_ocsp_response(responder.respond(der))
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert response.issuer_key_hash == ocsp.load_der_ocsp_request(der).issuer_key_hash


def test_reinitialised_pki_no_longer_vouches_for_old_cards(
    pki: Pki, responder: OcspResponder
) -> None:
    old_issuer = pki.issuing_certificate
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    init_pki(pki.directory, force=True, now=NOW)
    der = ocsp_request_der(cert, old_issuer)
    response = ocsp.load_der_ocsp_response(responder.respond(der))
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert response.certificates == [Pki.open(pki.directory).ocsp_certificate]


def test_the_ocsp_signer_itself_is_good(pki: Pki, responder: OcspResponder) -> None:
    response = _ask(responder, pki, pki.ocsp_certificate)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize(
    "request_der",
    [
        b"",
        b"\x30\x03\x02\x01\x01",
        b"not an OCSP request at all",
        bytes.fromhex("3082FFFF30"),
    ],
    ids=["empty", "wrong-structure", "text", "truncated"],
)
def test_malformed_request_gets_malformed_request(
    responder: OcspResponder, request_der: bytes
) -> None:
    response = ocsp.load_der_ocsp_response(responder.respond(request_der))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_truncated_real_request_is_malformed(pki: Pki, responder: OcspResponder) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    der = ocsp_request_der(cert, pki.issuing_certificate, nonce=b"q" * 16)
    for cut in (1, len(der) // 2, len(der) - 1):
        response = ocsp.load_der_ocsp_response(responder.respond(der[:cut]))
        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_oversized_nonce_is_malformed_per_rfc_8954(pki: Pki, responder: OcspResponder) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    der = ocsp_request_der(cert, pki.issuing_certificate, nonce=b"z" * 33)
    response = ocsp.load_der_ocsp_response(responder.respond(der))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_cert_id_with_an_unsupported_hash_is_unauthorized(
    pki: Pki, responder: OcspResponder
) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    der = ocsp_request_der(cert, pki.issuing_certificate, algorithm=hashes.SHA256())
    sha256_oid = bytes.fromhex("0609608648016503040201")
    assert der.count(sha256_oid) == 1
    # The same request naming SHA3-256 (2.16.840.1.101.3.4.2.8) for its CertID hashes.
    sha3 = der.replace(sha256_oid, sha256_oid[:-1] + b"\x08")
    response = ocsp.load_der_ocsp_response(responder.respond(sha3))
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_responder_refuses_a_folder_without_a_pki(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as caught:
        OcspResponder(tmp_path)
    assert caught.value.code is DevkitCode.DEVKIT_PKI_NOT_FOUND


def test_unreadable_pki_answers_internal_error(pki: Pki, responder: OcspResponder) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    pki.paths.state.write_text("{damaged")
    der = ocsp_request_der(cert, pki.issuing_certificate)
    response = ocsp.load_der_ocsp_response(responder.respond(der))
    assert response.response_status is ocsp.OCSPResponseStatus.INTERNAL_ERROR


def test_get_path_decoding() -> None:
    der = bytes(range(256))
    standard = base64.b64encode(der).decode()
    assert decode_get_path(quote(standard, safe="")) == der
    assert decode_get_path(standard) == der
    assert decode_get_path(base64.urlsafe_b64encode(der).decode().rstrip("=")) == der
    with pytest.raises(ValueError):
        decode_get_path("!!!not base64!!!")
