"""The CAs' CRLs (RFC 5280 §5): the issuing CA's of cards, the root CA's of the issuing
CA; and when a served CRL must be remade."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from careid_devkit.pki.certs import authority_key_identifier
from careid_devkit.pki.keys import issuer_public_key, signature_hash
from careid_devkit.pki.state import CaRevocation, Revocation


def build_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    revocations: Sequence[Revocation | CaRevocation],
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A complete CRL with CRL number, AKI and each entry's reason code."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
    )
    for revocation in revocations:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revocation.serial)
            .revocation_date(revocation.revoked_at)
        )
        # RFC 5280 §5.3.1: the reason code `unspecified` SHOULD be expressed by omission.
        if revocation.reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(revocation.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, signature_hash(issuer_key))


def crl_needs_refresh(
    crl: x509.CertificateRevocationList | None,
    *,
    issuer: x509.Certificate,
    revocations: Sequence[Revocation | CaRevocation],
    now: datetime,
    refresh_margin: timedelta,
) -> bool:
    """Whether a served CRL is missing, stale, from another key, or behind the state."""
    if crl is None or crl.next_update_utc is None:
        return True
    if now >= crl.next_update_utc - refresh_margin or now < crl.last_update_utc:
        return True
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer_public_key(issuer)):
        return True
    listed = {entry.serial_number for entry in crl}
    return listed != {revocation.serial for revocation in revocations}
