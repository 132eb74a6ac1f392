"""Revocation by OCSP against the devkit's responder over HTTP, and forged answers."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_validation_support import (
    NOW,
    START,
    PkiEnv,
    RecordingFetcher,
    closed_port_url,
    key_usage_for,
    next_uuid,
    request_nonce,
    silent_port,
)

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki import CertificateValidator, RevocationSource, UrllibFetcher
from careid_protocol.errors import ErrorCode
from support.clock import FakeClock


def _served(env: PkiEnv) -> int:
    return env.server.ocsp_requests_served


def _answer(
    env: PkiEnv,
    cert: x509.Certificate,
    request_body: bytes,
    *,
    signer: x509.Certificate,
    signer_key: CertificateIssuerPrivateKeyTypes,
    include: list[x509.Certificate] | None = None,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    by_name: bool = False,
) -> bytes:
    """A response we build ourselves, echoing the request's nonce."""
    this = this_update or env.clock.now
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=cert,
            issuer=env.pki.issuing_certificate,
            algorithm=hashes.SHA1(),  # noqa: S303 - CertID
            cert_status=status,
            this_update=this,
            next_update=next_update or this + timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(
            ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH,
            signer,
        )
    )
    if include:
        builder = builder.certificates(include)
    nonce = request_nonce(request_body)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(signer_key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _responder_cert(
    env: PkiEnv,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    eku: list[x509.ObjectIdentifier] | None = None,
    subject: x509.Name | None = None,
) -> x509.Certificate:
    rogue = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rogue responder")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or rogue)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(key_usage_for(digital_signature=True), critical=True)
    )
    usages = [ExtendedKeyUsageOID.OCSP_SIGNING] if eku is None else eku
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_good_answers_are_cached_until_next_update_at_most(env: PkiEnv) -> None:
    cert = env.issue()
    validator = env.validator()
    before = _served(env)
    first = validator.validate(cert)
    second = validator.validate(cert)
    assert _served(env) == before + 1
    assert first.revocation is not None and not first.revocation.cached
    assert second.revocation is not None and second.revocation.cached

    # The devkit's answers last an hour: past nextUpdate the responder is asked again
    # (with max_good_age_seconds raised past it here).
    validator = env.validator(ocsp={"max_good_age_seconds": 7200})
    validator.validate(cert)
    before = _served(env)
    env.clock.advance(timedelta(hours=1, seconds=1))
    third = validator.validate(cert)
    assert _served(env) == before + 1
    assert third.revocation is not None and not third.revocation.cached


def test_a_card_revoked_after_a_good_answer_is_refused_once_the_good_answer_is_too_old(
    env: PkiEnv,
) -> None:
    # The answer says good for an hour; a Registration Authority revokes the lost card a
    # minute later and expects it refused within max_good_age_seconds, not the hour.
    uuid = next_uuid()
    cert = env.issue(uuid=uuid)
    validator = env.validator(ocsp={"max_good_age_seconds": 120})
    validator.validate(cert)
    env.pki.revoke(uuid=uuid, now=env.clock.now)
    env.clock.advance(timedelta(seconds=119))
    cached = validator.validate(cert)
    assert cached.revocation is not None and cached.revocation.cached
    env.clock.advance(timedelta(seconds=1))
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)


def test_a_revoked_answer_is_kept_until_next_update(env: PkiEnv) -> None:
    uuid = next_uuid()
    cert = env.issue(uuid=uuid)
    env.pki.revoke(uuid=uuid, now=env.clock.now)
    validator = env.validator(ocsp={"max_good_age_seconds": 60})
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)
    served = _served(env)
    env.clock.advance(timedelta(minutes=30))  # past the good-answer limit, not nextUpdate
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)
    assert _served(env) == served


def test_a_revoked_card_is_refused_by_ocsp(env: PkiEnv) -> None:
    uuid = "555000000777"
    cert = env.issue(uuid=uuid)
    env.pki.revoke(uuid=uuid, reason="keyCompromise", now=NOW)
    validator = env.validator()
    with pytest.raises(CertificateRevokedError) as caught:
        validator.validate(cert)
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED
    assert "keyCompromise" in (caught.value.detail or "")

    # Revoked answers are cached too, and soft-fail never softens a revocation.
    before = _served(env)
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)
    with pytest.raises(CertificateRevokedError):
        env.validator(soft_fail=True, revocation="ocsp-then-crl").validate(cert)
    assert _served(env) == before + 1


def test_a_revocation_shows_once_the_cached_good_answer_expires(env: PkiEnv) -> None:
    uuid = "555000000778"
    cert = env.issue(uuid=uuid)
    validator = env.validator()
    validator.validate(cert)
    env.pki.revoke(uuid=uuid, now=START)
    assert validator.validate(cert).revocation is not None  # cached "good", by design
    env.clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)


def test_unknown_is_revoked_and_not_cached(env: PkiEnv) -> None:
    # Signed with the real issuing key but never recorded: a forgery made with a stolen
    # key. The chain is fine; the responder does not know it.
    cert = env.issue(issuer_key=env.pki.issuing_key)
    validator = env.validator()
    before = _served(env)
    for _ in range(2):
        with pytest.raises(CertificateRevokedError) as caught:
            validator.validate(cert)
        assert "unknown" in (caught.value.detail or "")
    assert _served(env) == before + 2


def test_each_request_carries_a_fresh_32_byte_nonce(env: PkiEnv) -> None:
    fetcher = RecordingFetcher()
    validator = env.validator(http=fetcher)
    validator.validate(env.issue())
    validator.validate(env.issue())
    nonces = [request_nonce(body) for _, body in fetcher.posts]
    assert len(nonces) == 2 and all(n is not None and len(n) == 32 for n in nonces)
    assert nonces[0] != nonces[1]


def test_an_answer_to_another_request_is_rejected(env: PkiEnv) -> None:
    """A replayed/misdirected answer: valid, signed, for this card — other nonce."""
    cert = env.issue()
    other_request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, env.pki.issuing_certificate, hashes.SHA1())  # noqa: S303
        .add_extension(x509.OCSPNonce(b"\x01" * 32), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    inner = RecordingFetcher()
    fetcher = RecordingFetcher(
        on_post=lambda url, _body: inner.post(url, other_request, "application/ocsp-request", 2)
    )
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher).validate(cert)
    assert caught.value.code is ErrorCode.REVOCATION_UNAVAILABLE
    assert "nonce does not match" in (caught.value.detail or "")


def test_a_missing_nonce_is_rejected_unless_that_responder_is_exempt(env: PkiEnv) -> None:
    cert = env.issue()

    def strip_nonce(url: str, _body: bytes) -> bytes:
        # A responder serving pre-signed answers: it never echoes a nonce.
        plain = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, env.pki.issuing_certificate, hashes.SHA1())  # noqa: S303
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        return RecordingFetcher().post(url, plain, "application/ocsp-request", 2)

    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=RecordingFetcher(on_post=strip_nonce)).validate(cert)
    assert "did not echo our nonce" in (caught.value.detail or "")

    exempt = {"responders": [{"url": env.pki.urls.ocsp + "/", "require_nonce": False}]}
    fetcher = RecordingFetcher()
    result = env.validator(http=fetcher, ocsp=exempt).validate(cert)
    assert result.revocation_method is RevocationSource.OCSP
    assert request_nonce(fetcher.posts[0][1]) is None  # none sent where none is required


def test_an_answer_signed_by_the_wrong_key_is_rejected(env: PkiEnv) -> None:
    """Names the real responder (by name) and includes its certificate; another key signed."""
    cert = env.issue()
    responder = env.pki.ocsp_certificate
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    # cryptography signs only with the key of the certificate it names, so name a decoy
    # with the real responder's subject and wrong_key, and include the real certificate.
    decoy = _responder_cert(
        env,
        wrong_key,
        issuer=env.pki.issuing_certificate,
        issuer_key=wrong_key,
        subject=responder.subject,
    )
    fetcher = RecordingFetcher(
        on_post=lambda _url, body: _answer(
            env, cert, body, signer=decoy, signer_key=wrong_key, include=[responder], by_name=True
        )
    )
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher).validate(cert)
    assert "signature does not verify" in (caught.value.detail or "")


def test_a_responder_certificate_from_another_ca_is_rejected(env: PkiEnv) -> None:
    cert = env.issue()
    key = ec.generate_private_key(ec.SECP256R1())
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _responder_cert(env, key, issuer=env.pki.root_certificate, issuer_key=other_ca_key)
    fetcher = RecordingFetcher(
        on_post=lambda _url, body: _answer(
            env, cert, body, signer=rogue, signer_key=key, include=[rogue]
        )
    )
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher).validate(cert)
    assert "was not issued by" in (caught.value.detail or "")


@pytest.mark.parametrize("usages", [[], [ExtendedKeyUsageOID.CLIENT_AUTH]])
def test_a_responder_certificate_without_ocsp_signing_is_rejected(
    env: PkiEnv, usages: list[x509.ObjectIdentifier]
) -> None:
    cert = env.issue()
    key = ec.generate_private_key(ec.SECP256R1())
    plain = _responder_cert(
        env, key, issuer=env.pki.issuing_certificate, issuer_key=env.pki.issuing_key, eku=usages
    )
    fetcher = RecordingFetcher(
        on_post=lambda _url, body: _answer(
            env, cert, body, signer=plain, signer_key=key, include=[plain]
        )
    )
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher).validate(cert)
    assert "OCSPSigning" in (caught.value.detail or "")


def test_an_answer_signed_by_the_issuing_ca_itself_is_accepted(env: PkiEnv) -> None:
    cert = env.issue()
    ca = env.pki.issuing_certificate
    fetcher = RecordingFetcher(
        on_post=lambda _url, body: _answer(
            env, cert, body, signer=ca, signer_key=env.pki.issuing_key
        )
    )
    assert env.validator(http=fetcher).validate(cert).revocation_method is RevocationSource.OCSP


def test_an_answer_about_another_certificate_is_rejected(env: PkiEnv) -> None:
    cert, other = env.issue(), env.issue()
    responder = env.pki.ocsp_certificate
    fetcher = RecordingFetcher(
        on_post=lambda _url, body: _answer(
            env, other, body, signer=responder, signer_key=env.pki.ocsp_key, include=[responder]
        )
    )
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher).validate(cert)
    assert "no answer for serial" in (caught.value.detail or "")


def test_a_stale_answer_is_rejected(env: PkiEnv) -> None:
    cert = env.issue()
    # The responder's clock (the shared one) is two hours behind ours: its one-hour
    # answer has passed its nextUpdate by the time we read it.
    ours = FakeClock(START + timedelta(hours=2))
    validator = CertificateValidator(env.config(), clock=ours, http=UrllibFetcher())
    with pytest.raises(RevocationUnavailableError) as caught:
        validator.validate(cert)
    assert "stale" in (caught.value.detail or "")


def test_an_answer_from_the_future_is_rejected(env: PkiEnv) -> None:
    cert = env.issue()
    responder = env.pki.ocsp_certificate
    fetcher = RecordingFetcher(
        on_post=lambda _url, body: _answer(
            env,
            cert,
            body,
            signer=responder,
            signer_key=env.pki.ocsp_key,
            include=[responder],
            this_update=START + timedelta(minutes=10),
        )
    )
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher).validate(cert)
    assert "in the future" in (caught.value.detail or "")


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
            serialization.Encoding.DER
        ),
    ],
)
def test_unusable_answers_are_unavailable(env: PkiEnv, body: bytes) -> None:
    fetcher = RecordingFetcher(on_post=lambda _url, _body: body)
    with pytest.raises(RevocationUnavailableError):
        env.validator(http=fetcher).validate(env.issue())


def test_a_responder_that_is_down_is_unavailable_in_ocsp_mode(env: PkiEnv) -> None:
    validator = env.validator(ocsp={"responder_url": closed_port_url()})
    with pytest.raises(RevocationUnavailableError) as caught:
        validator.validate(env.issue())
    assert "unreachable" in (caught.value.detail or "")


def test_a_responder_that_never_answers_times_out(env: PkiEnv) -> None:
    with silent_port() as url:
        validator = env.validator(ocsp={"responder_url": url, "timeout_seconds": 0.3})
        started = time.monotonic()
        with pytest.raises(RevocationUnavailableError):
            validator.validate(env.issue())
    assert time.monotonic() - started < 3


def test_ocsp_then_crl_falls_back_to_the_crl_when_the_responder_is_down(env: PkiEnv) -> None:
    validator = env.validator(revocation="ocsp-then-crl", ocsp={"responder_url": closed_port_url()})
    result = validator.validate(env.issue())
    assert result.revocation_method is RevocationSource.CRL
    assert not result.soft_fail_used

    uuid = "555000000779"
    revoked = env.issue(uuid=uuid)
    env.pki.revoke(uuid=uuid, now=START)
    validator.revocation.crl.refresh_due()  # not yet due: the cached CRL stays
    env.clock.advance(timedelta(hours=25))  # past the CRL's nextUpdate: fetched afresh
    with pytest.raises(CertificateRevokedError):
        validator.validate(revoked)


def test_soft_fail_accepts_but_marks_and_logs(
    env: PkiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    validator = env.validator(soft_fail=True, ocsp={"responder_url": closed_port_url()})
    with caplog.at_level(logging.WARNING, logger="careid_broker.pki"):
        result = validator.validate(env.issue())
    assert result.soft_fail_used
    assert result.revocation is None and result.revocation_method is None
    assert result.soft_fail_reason and "unreachable" in result.soft_fail_reason
    assert any("SOFT-FAIL" in record.getMessage() for record in caplog.records)


def test_a_card_naming_no_responder_is_unavailable_without_an_override(env: PkiEnv) -> None:
    cert = env.craft(ocsp_url=False)
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator().validate(cert)
    assert "names no OCSP responder" in (caught.value.detail or "")
