"""The CA certificates of a card's chain, each looked up on its issuer's CRL.

The card supplies no CA certificate: its chain is built from the configured
intermediates up to a trust anchor, so every CA in it is material the operator chose.
Still, an issuing CA its root has revoked (a compromised CA) must stop its cards at once,
not when someone edits the configuration. So, after the card's own status, each CA
certificate below the trust anchor is looked up on its issuer's CRL through `CrlCache`,
which fetches, verifies, caches, shares and refreshes it as it does a card's CRL. The
sources are the CA certificate's http(s) distribution points (with `[pki.crl]
use_distribution_points`) and the configured `[pki.crl] files` its issuer signed, in
every revocation mode.

Never by OCSP: the responder a deployment configures for cards (`[pki.ocsp]
responder_url`) would be asked about a CA it does not serve, and its "unknown" counts as
revoked.

A CA certificate with no such source is not checked: removing a compromised CA from the
configuration is then the operator's way. Said once per process per CA, at WARNING.
"""

from __future__ import annotations

import logging
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from careid_broker.errors import (
    AuthorityRevokedError,
    CertificateRevokedError,
    RevocationUnavailableError,
)
from careid_broker.pki.crl import CrlCache, distribution_points

logger = logging.getLogger(__name__)


def describe_ca(certificate: x509.Certificate) -> str:
    """`CA certificate 'CN=…' (serial 1A2B…)`: which CA, for details and the log."""
    return (
        f"CA certificate {certificate.subject.rfc4514_string()!r}"
        f" (serial {certificate.serial_number:X})"
    )


class AuthorityRevocation:
    """Checks the CA certificates of a verified chain on their issuers' CRLs."""

    def __init__(self, crl: CrlCache, *, use_distribution_points: bool) -> None:
        self._crl = crl
        self._use_distribution_points = use_distribution_points
        self._lock = threading.Lock()
        self._unchecked: set[bytes] = set()

    def check(self, chain: tuple[x509.Certificate, ...]) -> None:
        """Every CA certificate of `chain` (the card first, the trust anchor last) below
        the anchor, each against the next: AuthorityRevokedError for the first one
        revoked; else RevocationUnavailableError naming each one whose issuer's CRL could
        not be had. Every CA is looked up before "unavailable" is raised, so that a
        revoked CA further up is never hidden behind one whose CRL is down (soft-fail
        may accept "unavailable", never "revoked")."""
        problems: list[str] = []
        for index in range(1, len(chain) - 1):
            authority, issuer = chain[index], chain[index + 1]
            try:
                status = self._crl.check_if_named(authority, issuer)
            except CertificateRevokedError as exc:
                raise AuthorityRevokedError(
                    ca_subject=authority.subject.rfc4514_string(),
                    ca_serial=f"{authority.serial_number:X}",
                    detail=f"{describe_ca(authority)} in the card's chain is revoked: {exc.detail}",
                ) from exc
            except RevocationUnavailableError as exc:
                problems.append(f"{describe_ca(authority)} in the card's chain: {exc.detail}")
                continue
            if status is None:
                self._not_checked(authority, issuer)
        if problems:
            raise RevocationUnavailableError(detail="; ".join(problems))

    def _not_checked(self, authority: x509.Certificate, issuer: x509.Certificate) -> None:
        fingerprint = authority.fingerprint(hashes.SHA256())
        with self._lock:
            if fingerprint in self._unchecked:
                return
            self._unchecked.add(fingerprint)
        if distribution_points(authority) and not self._use_distribution_points:
            why = "its CRL distribution points are not used ([pki.crl] use_distribution_points)"
        else:
            why = "it names no http(s) CRL distribution point"
        logger.warning(
            "%s is not checked for revocation: %s and no [pki.crl] file holds the CRL of"
            " its issuer %r. Should it be compromised, remove it from [pki] (or configure"
            " its issuer's CRL).",
            describe_ca(authority),
            why,
            issuer.subject.rfc4514_string(),
        )
