"""The development PKI's OCSP responder logic (RFC 6960), pure: no HTTP.

`OcspResponder.respond` turns a DER OCSPRequest into a signed DER OCSPResponse: good,
revoked (time, reason) or unknown, signed by the delegated OCSP signer with its
certificate included, the nonce echoed (RFC 8954). It rereads `ca.json` whenever the file
changes, so `careid-devkit pki revoke` takes effect while it runs. DEMO/TEST MATERIAL.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp

from careid_devkit.codes import DevkitCode
from careid_devkit.pki.authority import Pki
from careid_devkit.pki.errors import PkiError
from careid_devkit.pki.files import PkiPaths
from careid_devkit.pki.keys import issuer_public_key, signature_hash
from careid_devkit.pki.state import PkiState, utc

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

DEFAULT_RESPONSE_VALIDITY = timedelta(hours=1)
#: RFC 8954 §2.1: a nonce longer than 32 octets must be rejected as malformedRequest.
MAX_NONCE_LENGTH = 32

#: The CertID hashes cryptography can answer for (RFC 6960 §4.1.1 uses SHA-1 by default).
_CERT_ID_HASHES = (hashes.SHA1, hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512)


def system_clock() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class OcspAnswer:
    """A response and a one-line, secret-free summary of it for the request log."""

    der: bytes
    summary: str


@dataclass(frozen=True, kw_only=True)
class _Snapshot:
    stamp: tuple[int, int, int, int]
    pki: Pki
    state: PkiState
    key_bits: bytes


def _stamp(path: Path) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


def _subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's contents, hashed into OCSP's issuerKeyHash."""
    key = issuer_public_key(certificate)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise PkiError(DevkitCode.DEVKIT_KEY_UNUSABLE, "DSA issuers are not supported")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


class OcspResponder:
    """Answers OCSP requests about the development PKI's issuing CA."""

    def __init__(
        self,
        pki_dir: Path | str,
        *,
        clock: Clock = system_clock,
        response_validity: timedelta = DEFAULT_RESPONSE_VALIDITY,
    ) -> None:
        self._paths = PkiPaths(directory=Path(pki_dir))
        self._clock = clock
        self._validity = response_validity
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self.current()  # fail now, not at the first request, if the folder is no PKI

    def current(self) -> _Snapshot:
        """The PKI as it is on disk now, reloaded only when `ca.json` has changed."""
        with self._lock:
            try:
                stamp = _stamp(self._paths.state)
            except FileNotFoundError as exc:
                detail = f"{self._paths.directory} has no {self._paths.state.name}"
                raise PkiError(DevkitCode.DEVKIT_PKI_NOT_FOUND, detail) from exc
            if self._snapshot is None or self._snapshot.stamp != stamp:
                pki = Pki.open(self._paths.directory)
                self._snapshot = _Snapshot(
                    stamp=stamp,
                    pki=pki,
                    state=pki.state(),
                    key_bits=_subject_public_key_bits(pki.issuing_certificate),
                )
                logger.debug("loaded PKI state from %s", self._paths.state)
            return self._snapshot

    @property
    def pki(self) -> Pki:
        """The PKI's current CA material."""
        return self.current().pki

    def respond(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse to a DER OCSPRequest (never raises)."""
        return self.answer(request_der).der

    def answer(self, request_der: bytes) -> OcspAnswer:
        """Like `respond`, with a summary line for the log."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            # Parsing is lazy: touch every field now so a bad one is a malformed request.
            nonce = self._nonce(request)
            serial = request.serial_number
            name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        except (ValueError, NotImplementedError) as exc:
            # NotImplementedError: requests for several certificates at once, which
            # cryptography cannot parse; this responder treats them as malformed.
            return self._unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, str(exc))
        try:
            algorithm = request.hash_algorithm
        except UnsupportedAlgorithm:
            algorithm = None
        if not isinstance(algorithm, _CERT_ID_HASHES):
            # We cannot tell whether the issuer is ours, so we are not authoritative.
            return self._unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unsupported hash")
        try:
            snapshot = self.current()
        except (OSError, PkiError) as exc:
            logger.error("cannot read the PKI, answering internalError: %s", exc)
            return self._unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR, "PKI unreadable")
        issuer = snapshot.pki.issuing_certificate
        ours = _digest(algorithm, issuer.subject.public_bytes()) == name_hash and (
            _digest(algorithm, snapshot.key_bits) == key_hash
        )
        state = snapshot.state
        revocation = state.revocation_of(serial) if ours else None
        revocation_time: datetime | None = None
        reason: x509.ReasonFlags | None = None
        if revocation is not None:
            status, label = ocsp.OCSPCertStatus.REVOKED, "revoked"
            revocation_time = revocation.revoked_at
            if revocation.reason is not x509.ReasonFlags.unspecified:
                reason = revocation.reason
        elif ours and (state.find_issued(serial) is not None or serial == state.ocsp_signer_serial):
            status, label = ocsp.OCSPCertStatus.GOOD, "good"
        else:
            status = ocsp.OCSPCertStatus.UNKNOWN
            label = "unknown" if ours else "unknown (another issuer)"
        now = utc(self._clock())
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=algorithm,
                cert_status=status,
                this_update=now,
                next_update=now + self._validity,
                revocation_time=revocation_time,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, snapshot.pki.ocsp_certificate)
            .certificates([snapshot.pki.ocsp_certificate])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        signed = builder.sign(snapshot.pki.ocsp_key, signature_hash(snapshot.pki.ocsp_key))
        return OcspAnswer(
            der=signed.public_bytes(serialization.Encoding.DER),
            summary=f"serial {serial:X} {label}" + (" +nonce" if nonce is not None else ""),
        )

    @staticmethod
    def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            return None
        if not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
            raise ValueError(f"nonce of {len(nonce)} bytes (RFC 8954 allows 1 to 32)")
        return nonce

    @staticmethod
    def _unsuccessful(status: ocsp.OCSPResponseStatus, why: str) -> OcspAnswer:
        response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
        return OcspAnswer(
            der=response.public_bytes(serialization.Encoding.DER),
            summary=f"{status.name.lower()} ({why})",
        )


def decode_get_path(encoded: str) -> bytes:
    """The DER request in an RFC 6960 A.1 GET path: URL-encoded base64 (url-safe tolerated)."""
    text = unquote(encoded)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the GET path is not base64") from exc
