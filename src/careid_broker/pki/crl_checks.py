"""Whether a CRL can answer for certificates of an issuer (RFC 5280 §6.3.3), pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509

from careid_broker.pki.keys import UnsupportedKey, supported_key


class CrlProblem(Exception):
    """The CRL cannot be used; the message says why (for the operator's log)."""

    def __init__(self, message: str, *, other_issuer: bool = False) -> None:
        super().__init__(message)
        self.other_issuer = other_issuer
        """The CRL is well-formed but another issuer's (not a fault of a shared file)."""


def is_stale(next_update: datetime, now: datetime, skew: timedelta) -> bool:
    """A CRL past its nextUpdate, beyond the clock skew, must not be used."""
    return next_update < now - skew


def verify_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    *,
    now: datetime,
    skew: timedelta,
) -> datetime:
    """Check issuer, signature, scope and thisUpdate; return nextUpdate (or CrlProblem).

    Staleness is left to the caller, who may still hold a fresher CRL.
    """
    if crl.issuer != issuer.subject:
        raise CrlProblem(
            f"the CRL is from {crl.issuer.rfc4514_string()}, not {issuer.subject.rfc4514_string()}",
            other_issuer=True,
        )
    try:
        key_usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.crl_sign:
        raise CrlProblem("the issuer's keyUsage does not allow it to sign CRLs")
    try:
        key = supported_key(issuer)
    except UnsupportedKey as exc:
        raise CrlProblem(f"the CRL's issuer key cannot be used: {exc}") from exc
    if not crl.is_signature_valid(key):
        raise CrlProblem(
            f"the CRL's signature does not verify with {issuer.subject.rfc4514_string()}'s key"
        )
    _check_scope(crl)
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlProblem("the CRL has no nextUpdate, so its freshness cannot be judged")
    if crl.last_update_utc > now + skew:
        raise CrlProblem(f"the CRL's thisUpdate {crl.last_update_utc.isoformat()} is in the future")
    return next_update


def check_covers(crl: x509.CertificateRevocationList, certificate: x509.Certificate) -> None:
    """Refuse (CrlProblem) a verified CRL of the certificate's issuer whose scope leaves
    the certificate out (RFC 5280 §6.3.3 (b)(2)): a CRL naming distribution points
    answers only for certificates that name one of them; one naming none (or with no
    issuingDistributionPoint) is the issuer's full CRL. Checked wherever a CRL is chosen
    for a certificate, since CRLs are fetched, kept and shared by source, not by card.

    A CRL of end-entity certificates only says nothing of a CA certificate, and an
    authority revocation list (onlyContainsCACerts, RFC 5280 §5.2.5) nothing of a card:
    an ARL answers for CA certificates and never clears a card.
    """
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return
    if point.only_contains_user_certs and _is_ca(certificate):
        raise CrlProblem("the CRL does not cover this certificate: it lists end-entity ones only")
    if point.only_contains_ca_certs and not _is_ca(certificate):
        raise CrlProblem("the CRL does not cover this certificate: it lists CA certificates only")
    scope = _point_names(point.full_name, point.relative_name, crl.issuer)
    if not scope:
        return
    names = _certificate_points(certificate)
    if scope.isdisjoint(names):
        raise CrlProblem(
            "the CRL does not cover this certificate: it is for distribution point "
            f"{_describe(scope)}, not this certificate's ({_describe(names) or 'none'})"
        )


def _point_names(
    full_name: list[x509.GeneralName] | None,
    relative_name: x509.RelativeDistinguishedName | None,
    crl_issuer: x509.Name,
) -> frozenset[x509.GeneralName]:
    """A distribution point's names; a relative name is relative to the CRL's issuer."""
    if full_name:
        return frozenset(full_name)
    if relative_name is not None:
        return frozenset([x509.DirectoryName(x509.Name([*crl_issuer.rdns, relative_name]))])
    return frozenset()


def _certificate_points(certificate: x509.Certificate) -> frozenset[x509.GeneralName]:
    """The names of the certificate's distribution points whose CRL its issuer signs."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return frozenset()
    names: set[x509.GeneralName] = set()
    for point in points:
        if not point.crl_issuer:
            names.update(_point_names(point.full_name, point.relative_name, certificate.issuer))
    return frozenset(names)


def _describe(names: frozenset[x509.GeneralName]) -> str:
    return ", ".join(
        sorted(
            name.value.rfc4514_string() if isinstance(name, x509.DirectoryName) else str(name.value)
            for name in names
        )
    )


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_scope(crl: x509.CertificateRevocationList) -> None:
    """Refuse CRLs that leave out some revoked certificates of the kinds they cover: delta
    CRLs, and partitions by reason, indirect CRLs and attribute-certificate CRLs. Which
    kind of certificate a CRL covers (end-entity or CA) is `check_covers`'s question."""
    extensions = crl.extensions
    for extension in extensions:
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise CrlProblem(
                f"the CRL has an unrecognised critical extension {extension.oid.dotted_string}"
            )
    try:
        extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise CrlProblem("a delta CRL cannot be used on its own")
    try:
        point = extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return
    if (
        point.only_contains_attribute_certs
        or point.only_some_reasons is not None
        or point.indirect_crl
    ):
        raise CrlProblem(
            "the CRL covers only part of the issuer's certificates (issuingDistributionPoint)"
        )
