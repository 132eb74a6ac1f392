"""Helpers for the development PKI and OCSP responder tests (imported by test modules)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp, verification

from careid_devkit import cli
from careid_devkit.card_profile import CardProfile
from careid_devkit.pki import Pki

#: A fixed "now" for library tests, so validity checks are deterministic.
NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)
PIN = "246810"


def card_cert(profile: CardProfile) -> x509.Certificate:
    """The profile's PIV Authentication certificate."""
    return x509.load_pem_x509_certificate(profile.certificate_pem.encode("ascii"))


def client_verifier(root: x509.Certificate, at: datetime) -> verification.ClientVerifier:
    """cryptography's web-PKI client verifier trusting `root` at time `at`."""
    store = verification.Store([root])
    return verification.PolicyBuilder().store(store).time(at).build_client_verifier()


def verify_chain(pki: Pki, cert: x509.Certificate, at: datetime) -> list[x509.Certificate]:
    """The chain built from `cert` to the PKI's root, or `VerificationError`."""
    verifier = client_verifier(pki.root_certificate, at)
    return verifier.verify(cert, [pki.issuing_certificate]).chain


def ocsp_request_der(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A DER OCSP request for one certificate, built by cryptography."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        cert, issuer, algorithm if algorithm is not None else hashes.SHA256()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def verify_ocsp_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """Check the response's signature with the signer's public key (raises if bad)."""
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    else:  # pragma: no cover - the dev PKI only makes EC signers
        raise AssertionError(f"unexpected signer key {key!r}")


def nonce_of(response: ocsp.OCSPResponse) -> bytes | None:
    """The response's nonce extension, if any."""
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run `careid-devkit` in-process: (exit status, stdout, stderr).

    argparse usage errors come back as their SystemExit status, as a shell sees them.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(list(argv))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()
