"""The certificate checks after the chain: validity with skew, key usage, policies. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from careid_broker.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificatePolicyError,
    CertificateUntrustedError,
    CertificateUsageError,
)
from careid_broker.pki.config import PolicyMatch
from careid_broker.pki.status import describe


def clamp_into_validity(certificate: x509.Certificate, now: datetime) -> datetime:
    """`now`, moved into the certificate's validity period if it lies outside.

    The chain is checked at this time so that an expired or not-yet-valid card is
    reported as such by `check_validity` (after the chain, as DESIGN.md orders it)
    rather than as an anonymous chain failure; inside the period it is `now` itself.
    """
    return min(max(now, certificate.not_valid_before_utc), certificate.not_valid_after_utc)


def check_validity(certificate: x509.Certificate, now: datetime, skew: timedelta) -> None:
    """The card's validity period contains `now`, give or take the clock skew."""
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if now < not_before - skew:
        raise CertificateNotYetValidError(
            detail=f"{describe(certificate)} is valid from {not_before.isoformat()};"
            f" now is {now.isoformat()} (allowed skew {skew})"
        )
    if now > not_after + skew:
        raise CertificateExpiredError(
            detail=f"{describe(certificate)} expired at {not_after.isoformat()};"
            f" now is {now.isoformat()} (allowed skew {skew})"
        )


def check_issuers_valid(chain: Iterable[x509.Certificate], now: datetime, skew: timedelta) -> None:
    """Every CA certificate above the card is valid now (the chain may have been built at
    a clamped time), give or take the skew."""
    for certificate in chain:
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if not start - skew <= now <= end + skew:
            raise CertificateUntrustedError(
                detail=f"CA certificate {certificate.subject.rfc4514_string()} is valid"
                f" {start.isoformat()} to {end.isoformat()}, not now ({now.isoformat()})"
            )


def check_usage(certificate: x509.Certificate) -> None:
    """keyUsage digitalSignature (required), and clientAuth if extendedKeyUsage is present.

    FIPS 201 / SP 800-78: the PIV Authentication key signs challenges, so its certificate
    asserts digitalSignature; an extendedKeyUsage without clientAuth (say, S/MIME only)
    means the issuer did not mean it for sign-in.
    """
    extensions = certificate.extensions
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateUsageError(
            detail=f"{describe(certificate)} has no keyUsage (digitalSignature is required)"
        ) from None
    if not key_usage.digital_signature:
        raise CertificateUsageError(
            detail=f"{describe(certificate)}: keyUsage lacks digitalSignature"
        )
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        named = ", ".join(oid.dotted_string for oid in usages)
        raise CertificateUsageError(
            detail=f"{describe(certificate)}: extendedKeyUsage ({named}) lacks clientAuth"
        )


def asserted_policies(certificate: x509.Certificate) -> frozenset[x509.ObjectIdentifier]:
    """The policy OIDs the certificate asserts (empty without certificatePolicies)."""
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(info.policy_identifier for info in policies)


def check_policies(
    certificate: x509.Certificate,
    *,
    required: tuple[x509.ObjectIdentifier, ...],
    match: PolicyMatch,
    disallowed: tuple[x509.ObjectIdentifier, ...],
) -> None:
    """Required policies (any or all) asserted, and no disallowed one.

    The card's own certificatePolicies are what is checked; anyPolicy (2.5.29.32.0) does
    not stand in for a named required policy.
    """
    asserted = asserted_policies(certificate)
    forbidden = sorted(oid.dotted_string for oid in asserted.intersection(disallowed))
    if forbidden:
        raise CertificatePolicyError(
            detail=f"{describe(certificate)} asserts disallowed policy {', '.join(forbidden)}"
        )
    if not required:
        return
    missing = sorted(oid.dotted_string for oid in required if oid not in asserted)
    satisfied = not missing if match is PolicyMatch.ALL else len(missing) < len(required)
    if not satisfied:
        shown = ", ".join(sorted(oid.dotted_string for oid in asserted)) or "none"
        wanted = "all of" if match is PolicyMatch.ALL else "one of"
        raise CertificatePolicyError(
            detail=f"{describe(certificate)} asserts policies {shown}; {wanted}"
            f" {', '.join(oid.dotted_string for oid in required)} is required"
        )
