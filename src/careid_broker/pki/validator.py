"""`CertificateValidator`: is this card certificate one we accept, and whose is it?

The order is DESIGN.md's ("The signed challenge", verification order), each failure a
typed `BrokerError` with a stable code and an operator `detail`:

parse → every key EC P-256/P-384 or RSA ≥ 2048 (card first, CAs once the chain is built) →
chain to the trust anchors → validity with bounded skew → keyUsage / EKU → certificate
policies → revocation (the card by the configured mode, then each CA certificate below
the trust anchor on its issuer's CRL): `trust()` stops there. Card sign-in then checks the token's
signature with the trusted key before `identify()` reads the holder's UUID
(`careid_broker.card.service`); `validate()` is `trust()` then `identify()`, for callers
with no signature to check.

Chain and validity. cryptography's verifier checks validity itself at the time it is
given, and then fails with one undifferentiated `VerificationError`. So the chain is
built at `now` moved into the card's own validity period (`clamp_into_validity`, which
is `now` itself for a card in date) and the card's dates are then checked against the
real `now` with the configured skew: an expired card from a trusted CA gets
`certificate_expired`, not `certificate_untrusted`, and a card a minute "early" (a
workstation or CA clock slightly ahead) is accepted within the skew. Where the time was
moved, the CA certificates are checked against the real `now` as well, so a clamped
time never lends validity to an expired CA. Mapping the verifier's error strings
instead would break with every cryptography release.

The card's extended key usage and subjectAltName are left to our own checks
(`extension_policies`): the web-PKI defaults would reject a card without clientAuth as
"untrusted" rather than "usage", and would require a SAN that real PIV/Care Identity
card certificates need not carry (their identity is in the subject).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification

from careid_broker.errors import (
    CertificateKeyUnsupportedError,
    CertificateMalformedError,
    CertificateUntrustedError,
    IdentityMissingError,
)
from careid_broker.pki.checks import (
    check_issuers_valid,
    check_policies,
    check_usage,
    check_validity,
    clamp_into_validity,
)
from careid_broker.pki.config import PkiConfig
from careid_broker.pki.crl_fetch import FetchedCrl, fetch_crls, named_crls
from careid_broker.pki.http import HttpFetcher
from careid_broker.pki.keys import UnsupportedKey, supported_key
from careid_broker.pki.revocation import RevocationChecker
from careid_broker.pki.sharing import PROCESS_ONLY, RevocationSharing
from careid_broker.pki.status import (
    Clock,
    RevocationSource,
    RevocationStatus,
    describe,
    utc_now,
)
from careid_protocol.identity import IdentityRule, holder_name, uuid_from_certificate
from careid_protocol.token import (
    MAX_CERTIFICATE_BYTES,
    ProtocolError,
    load_certificate,
    read_fully,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrustedCertificate:
    """A card certificate that chains to a trust anchor, is in date, fit for sign-in and
    not revoked: its key may be trusted; whose it is comes next (`identify`)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """The card first, then each issuer up to and including the trust anchor."""
    issuer_dn: str
    serial_hex: str
    fingerprint_sha256: str
    revocation: RevocationStatus | None
    """The status that cleared the card; None when soft-fail accepted the card without
    one (soft-fail may also have accepted a CA's status alone: `soft_fail_used`)."""
    soft_fail_used: bool
    soft_fail_reason: str | None

    @property
    def revocation_method(self) -> RevocationSource | None:
        """OCSP or CRL, whichever answered; None when soft-fail accepted the card."""
        return self.revocation.source if self.revocation is not None else None


@dataclass(frozen=True, kw_only=True)
class ValidatedCertificate(TrustedCertificate):
    """A trusted card certificate with its holder: what sign-in and audit need."""

    uuid: str
    holder_name: str


def identify(trusted: TrustedCertificate, rule: IdentityRule) -> ValidatedCertificate:
    """The holder's Care Identity UUID under `rule`, or IdentityMissingError."""
    leaf = trusted.certificate
    uuid = uuid_from_certificate(leaf, rule)
    if uuid is None:
        raise IdentityMissingError(
            detail=f"{describe(leaf)}: subject {leaf.subject.rfc4514_string()!r} holds no"
            " Care Identity UUID under the configured identity rule"
        )
    return ValidatedCertificate(
        certificate=trusted.certificate,
        chain=trusted.chain,
        issuer_dn=trusted.issuer_dn,
        serial_hex=trusted.serial_hex,
        fingerprint_sha256=trusted.fingerprint_sha256,
        revocation=trusted.revocation,
        soft_fail_used=trusted.soft_fail_used,
        soft_fail_reason=trusted.soft_fail_reason,
        uuid=uuid,
        holder_name=holder_name(leaf),
    )


def parse_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from DER, fully parsed (`careid_protocol.token.read_fully`), or
    CertificateMalformedError."""
    if not isinstance(data, x509.Certificate) and len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateMalformedError(
            detail=f"certificate of {len(data)} bytes (at most {MAX_CERTIFICATE_BYTES})"
        )
    try:
        if isinstance(data, x509.Certificate):
            return read_fully(data)
        return load_certificate(data)
    except ProtocolError as exc:
        raise CertificateMalformedError(detail=exc.detail) from exc


def _check_keys(certificates: tuple[x509.Certificate, ...]) -> None:
    """Refuse a card or CA key of a type we do not accept, by name rather than as
    "untrusted" (cryptography's verifier would refuse some of them without saying why)."""
    for certificate in certificates:
        try:
            supported_key(certificate)
        except UnsupportedKey as exc:
            raise CertificateKeyUnsupportedError(detail=str(exc)) from exc


class CertificateValidator:
    """Validates card certificates against the `[pki]` configuration."""

    def __init__(
        self,
        config: PkiConfig,
        *,
        clock: Clock,
        http: HttpFetcher,
        sharing: RevocationSharing = PROCESS_ONLY,
    ) -> None:
        self._config = config
        self._clock = clock
        self._http = http
        self._store = verification.Store(list(config.trust_anchors))
        self._intermediates = list(config.intermediates)
        self._ee_policy = (
            verification.ExtensionPolicy.webpki_defaults_ee()
            .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None)
            .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
        )
        self._ca_policy = verification.ExtensionPolicy.webpki_defaults_ca()
        # Shared through the store by the broker, so every worker and instance agrees.
        self.revocation = RevocationChecker(
            config,
            clock=clock,
            http=http,
            sharing=sharing,
        )

    def trust(self, certificate: bytes | x509.Certificate) -> TrustedCertificate:
        """Every certificate check up to and including revocation, in DESIGN.md's order;
        raises the first failure's BrokerError."""
        config = self._config
        leaf = parse_certificate(certificate)
        _check_keys((leaf,))
        now = utc_now(self._clock)
        skew = config.max_clock_skew
        at = clamp_into_validity(leaf, now)
        chain = self._chain(leaf, at)
        check_validity(leaf, now, skew)
        if at != now:
            check_issuers_valid(chain[1:], now, skew)
        check_usage(leaf)
        check_policies(
            leaf,
            required=config.require_policies,
            match=config.policy_match,
            disallowed=config.disallowed_policies,
        )
        outcome = self.revocation.check_chain(chain)
        return TrustedCertificate(
            certificate=leaf,
            chain=chain,
            issuer_dn=leaf.issuer.rfc4514_string(),
            serial_hex=f"{leaf.serial_number:X}",
            fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
            revocation=outcome.status,
            soft_fail_used=outcome.soft_fail_used,
            soft_fail_reason=outcome.soft_fail_reason,
        )

    def fetch_crls(self, card_certificates: Iterable[x509.Certificate]) -> Iterator[FetchedCrl]:
        """Fetch and verify every CRL the configuration and these cards' certificates name,
        for an administrator's refresh; each one fetched is adopted (`CrlCache.adopt`):
        every worker and instance takes it up at its next check of that issuer."""
        named = named_crls(self._config, card_certificates)
        for fetched in fetch_crls(self._config, named, http=self._http, now=utc_now(self._clock)):
            if fetched.crl is not None and fetched.issuer is not None:
                self.revocation.crl.adopt(
                    fetched.source.location,
                    is_file=fetched.source.is_file,
                    issuer=fetched.issuer,
                    crl=fetched.crl,
                )
            yield fetched

    def identify(self, trusted: TrustedCertificate) -> ValidatedCertificate:
        """The holder of a trusted certificate, by the configured identity rule."""
        return identify(trusted, self._config.identity)

    def validate(self, certificate: bytes | x509.Certificate) -> ValidatedCertificate:
        """`trust` then `identify`: for callers with no signature to check in between."""
        return self.identify(self.trust(certificate))

    def _chain(self, leaf: x509.Certificate, at: datetime) -> tuple[x509.Certificate, ...]:
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(ca_policy=self._ca_policy, ee_policy=self._ee_policy)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, self._intermediates)
        except verification.VerificationError as exc:
            raise CertificateUntrustedError(detail=f"{describe(leaf)}: {exc}") from exc
        chain = tuple(verified.chain)
        if len(chain) < 2:
            # A trust anchor presented as a card: nothing vouches for it but itself.
            raise CertificateUntrustedError(detail=f"{describe(leaf)} is itself a trust anchor")
        _check_keys(chain[1:])
        return chain

    def start(self) -> None:
        """Start background work (the CRL refresher)."""
        self.revocation.start()

    def stop(self) -> None:
        """Stop background work."""
        self.revocation.stop()
