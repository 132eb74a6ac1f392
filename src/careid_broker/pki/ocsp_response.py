"""Checking one OCSP response (RFC 6960 §3.2): who signed it, for what, and how fresh.

Pure (no I/O): `verify_response` turns DER bytes into an `OcspAnswer` or raises
`InvalidOcspResponse` saying what was wrong, for the operator's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from careid_broker.pki.keys import UnsupportedKey
from careid_broker.pki.signatures import key_hash, signature_is_valid

#: CertID hashes we can recompute (what OCSPRequestBuilder accepts).
_CERT_ID_HASHES = (hashes.SHA1, hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512)


class InvalidOcspResponse(Exception):
    """The response cannot be relied on; the message says why."""


class OcspResponderUnusable(InvalidOcspResponse):
    """No OCSP answer at all: not an OCSPResponse (a proxy's error page, say), or the
    responder said tryLater / internalError. The responder is in trouble, whichever
    certificate was asked about; other failures concern the one answer."""


#: Response statuses that mean "the responder cannot answer now" (RFC 6960 §4.2.1).
#: malformedRequest, sigRequired and unauthorized are about the request, not the
#: responder's health.
_RESPONDER_TROUBLE = (ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.INTERNAL_ERROR)


@dataclass(frozen=True, kw_only=True)
class OcspAnswer:
    """A verified answer about one certificate."""

    status: ocsp.OCSPCertStatus
    this_update: datetime
    next_update: datetime | None
    revocation_time: datetime | None
    revocation_reason: x509.ReasonFlags | None
    signer: str
    """Who signed: the issuing CA itself or the delegated responder's subject."""


def cert_id(
    certificate: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes, int]:
    """(issuerNameHash, issuerKeyHash, serialNumber): the CertID of RFC 6960 §4.1.1."""
    # Building a request is the simplest exact way to get the hash of the issuer's
    # subjectPublicKey bits for any hash, without hand-parsing the SPKI.
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash, request.serial_number


def verify_response(
    der: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    nonce: bytes | None,
    now: datetime,
    skew: timedelta,
    max_age: timedelta,
) -> OcspAnswer:
    """The verified answer about `certificate` in a DER OCSPResponse.

    `nonce`: the nonce we sent, which must come back; None when none is required.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
        status = response.response_status
    except ValueError as exc:
        raise OcspResponderUnusable(f"not an OCSP response ({exc})") from exc
    if status in _RESPONDER_TROUBLE:
        raise OcspResponderUnusable(f"the responder answered {status.name}")
    if status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise InvalidOcspResponse(f"the responder answered {status.name}")
    try:
        single = _single_response(response, certificate, issuer)
        signer = _signer(response, issuer, now=now, skew=skew)
        try:
            valid = signature_is_valid(
                signer,
                signature=response.signature,
                data=response.tbs_response_bytes,
                hash_algorithm=response.signature_hash_algorithm,
                algorithm_oid=response.signature_algorithm_oid,
            )
        except UnsupportedKey as exc:
            raise InvalidOcspResponse(f"the responder's key cannot be used: {exc}") from exc
        if not valid:
            raise InvalidOcspResponse(
                f"the signature does not verify with {signer.subject.rfc4514_string()}'s key"
            )
        if nonce is not None:
            _check_nonce(response, nonce)
        answer = OcspAnswer(
            status=single.certificate_status,
            this_update=single.this_update_utc,
            next_update=single.next_update_utc,
            revocation_time=single.revocation_time_utc,
            revocation_reason=single.revocation_reason,
            signer="the issuing CA"
            if signer == issuer
            else f"delegated responder {signer.subject.rfc4514_string()}",
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography parses lazily: a damaged field surfaces here.
        raise InvalidOcspResponse(f"the response is malformed ({exc})") from exc
    _check_freshness(answer, now=now, skew=skew, max_age=max_age)
    return answer


def _single_response(
    response: ocsp.OCSPResponse, certificate: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID is ours (recomputed with its hash algorithm)."""
    for single in response.responses:
        if single.serial_number != certificate.serial_number:
            continue
        try:
            algorithm = single.hash_algorithm
        except UnsupportedAlgorithm:
            continue
        if not isinstance(algorithm, _CERT_ID_HASHES):
            continue
        name_hash, issuer_key_hash, _ = cert_id(certificate, issuer, algorithm)
        if (single.issuer_name_hash, single.issuer_key_hash) == (name_hash, issuer_key_hash):
            return single
    raise InvalidOcspResponse(
        f"the response holds no answer for serial {certificate.serial_number:X} of this issuer"
    )


def _identifies(response: ocsp.OCSPResponse, candidate: x509.Certificate) -> bool:
    """Whether the response's ResponderID names this certificate."""
    by_key = response.responder_key_hash
    if by_key is not None:
        return key_hash(candidate) == by_key
    return candidate.subject == response.responder_name


def _signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, *, now: datetime, skew: timedelta
) -> x509.Certificate:
    """The certificate whose key must have signed: the CA, or a responder it authorised.

    RFC 6960 §4.2.2.2: a delegated responder's certificate is issued directly by the CA
    that issued the certificate in question and carries id-kp-OCSPSigning.
    """
    if _identifies(response, issuer):
        return issuer
    why = "the responder is neither the issuing CA nor a responder certificate it included"
    for candidate in response.certificates:
        if not _identifies(response, candidate):
            continue
        problem = _delegation_problem(candidate, issuer, now=now, skew=skew)
        if problem is None:
            return candidate
        why = f"responder certificate {candidate.subject.rfc4514_string()!r} {problem}"
    raise InvalidOcspResponse(why)


def _delegation_problem(
    candidate: x509.Certificate, issuer: x509.Certificate, *, now: datetime, skew: timedelta
) -> str | None:
    try:
        candidate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return f"was not issued by {issuer.subject.rfc4514_string()}"
    try:
        usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "has no extendedKeyUsage (id-kp-OCSPSigning is required)"
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        return "is not authorised for OCSP signing (no id-kp-OCSPSigning)"
    try:
        key_usage = candidate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.digital_signature:
        return "may not make signatures (keyUsage lacks digitalSignature)"
    if now + skew < candidate.not_valid_before_utc:
        return f"is not valid until {candidate.not_valid_before_utc.isoformat()}"
    if now - skew > candidate.not_valid_after_utc:
        return f"expired at {candidate.not_valid_after_utc.isoformat()}"
    return None


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes) -> None:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise InvalidOcspResponse(
            "the responder did not echo our nonce (set require_nonce = false for a"
            " responder that serves pre-signed answers)"
        ) from None
    if echoed != nonce:
        raise InvalidOcspResponse(
            "the nonce does not match our request: a replayed or misdirected response"
        )


def _check_freshness(
    answer: OcspAnswer, *, now: datetime, skew: timedelta, max_age: timedelta
) -> None:
    """RFC 6960 §4.2.2.1 / §3.2 items 5-6, with the configured clock skew."""
    if answer.this_update > now + skew:
        raise InvalidOcspResponse(f"thisUpdate {answer.this_update.isoformat()} is in the future")
    if answer.next_update is not None:
        if answer.next_update < now - skew:
            raise InvalidOcspResponse(
                f"the response is stale: nextUpdate {answer.next_update.isoformat()} has passed"
            )
    elif answer.this_update + max_age < now - skew:
        raise InvalidOcspResponse(
            f"the response is stale: no nextUpdate and thisUpdate"
            f" {answer.this_update.isoformat()} is older than {max_age}"
        )


def request_der(request: ocsp.OCSPRequest) -> bytes:
    """The DER encoding of a request (what is POSTed)."""
    return request.public_bytes(serialization.Encoding.DER)
