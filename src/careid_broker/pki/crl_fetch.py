"""Fetching and verifying every CRL a deployment relies on, outside any sign-in.

An administrator's "refresh the CRLs now" runs in a process of its own, which holds no
CRL from earlier sign-ins; what it can fetch is what is known without a card: the CRL
files `[pki.crl]` names, the distribution points of the registered cards' certificates
(which the store keeps), and those of the configured CA certificates. Each CRL is
verified against the configured CA that issued it (RFC 5280 §6.3.3), as a sign-in would,
and handed on (`CertificateValidator.fetch_crls`) to every worker through the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from careid_broker.pki.config import PkiConfig, RevocationMode
from careid_broker.pki.crl import distribution_points, read_crl
from careid_broker.pki.crl_checks import CrlProblem, is_stale, verify_crl
from careid_broker.pki.http import HttpFetcher

CRL_FILES = "[pki.crl] files"
REGISTERED_CARDS = "registered cards' certificates"


@dataclass(frozen=True, kw_only=True)
class NamedCrl:
    """Where a CRL is, who named it, and whether it is a file."""

    location: str
    named_by: str
    is_file: bool


@dataclass(frozen=True, kw_only=True)
class FetchedCrl:
    """One CRL fetched and verified, or why not (`problem`)."""

    source: NamedCrl
    problem: str | None = None
    issuer_dn: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    serials: frozenset[int] = frozenset()
    # The verified CRL and the CA certificate it verified against (when fetched).
    crl: x509.CertificateRevocationList | None = field(default=None, repr=False, compare=False)
    issuer: x509.Certificate | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Fetched, verified and current."""
        return self.problem is None


def named_crls(config: PkiConfig, card_certificates: Iterable[x509.Certificate]) -> list[NamedCrl]:
    """Every CRL the configuration and the registered cards name, once each, in order.

    With revocation "ocsp" the cards' CRLs are not used, but the CA certificates' are
    (their issuers' CRLs: files and the CA certificates' distribution points)."""
    cards = config.revocation is not RevocationMode.OCSP
    found: list[NamedCrl] = []
    seen: set[str] = set()

    def add(location: str, named_by: str, *, is_file: bool) -> None:
        if location not in seen:
            seen.add(location)
            found.append(NamedCrl(location=location, named_by=named_by, is_file=is_file))

    for path in config.crl.files:
        add(str(path), CRL_FILES, is_file=True)
    if config.crl.use_distribution_points:
        if cards:
            for url in sorted({u for c in card_certificates for u in distribution_points(c)}):
                add(url, REGISTERED_CARDS, is_file=False)
        for certificate in (*config.trust_anchors, *config.intermediates):
            for url in distribution_points(certificate):
                add(url, f"CA certificate {certificate.subject.rfc4514_string()!r}", is_file=False)
    return found


def fetch_crls(
    config: PkiConfig, named: Iterable[NamedCrl], *, http: HttpFetcher, now: datetime
) -> Iterator[FetchedCrl]:
    """Fetch, parse and verify each named CRL against the configured CA that issued it."""
    authorities = (*config.trust_anchors, *config.intermediates)
    for source in named:
        try:
            yield _fetch_one(source, config, authorities, http=http, now=now)
        except CrlProblem as exc:
            yield FetchedCrl(source=source, problem=str(exc))


def _fetch_one(
    source: NamedCrl,
    config: PkiConfig,
    authorities: tuple[x509.Certificate, ...],
    *,
    http: HttpFetcher,
    now: datetime,
) -> FetchedCrl:
    crl = read_crl(
        source.location, is_file=source.is_file, http=http, timeout=config.crl.timeout_seconds
    )
    issuers = [ca for ca in authorities if ca.subject == crl.issuer]
    if not issuers:
        raise CrlProblem(f"issued by {crl.issuer.rfc4514_string()}, not a configured CA")
    problems: list[str] = []
    for issuer in issuers:  # a CA renewed with a new key has two certificates
        try:
            next_update = verify_crl(crl, issuer, now=now, skew=config.max_clock_skew)
        except CrlProblem as exc:
            problems.append(str(exc))
            continue
        if is_stale(next_update, now, config.max_clock_skew):
            raise CrlProblem(f"out of date: its next update was due {next_update.isoformat()}")
        return FetchedCrl(
            source=source,
            issuer_dn=issuer.subject.rfc4514_string(),
            this_update=crl.last_update_utc,
            next_update=next_update,
            serials=frozenset(entry.serial_number for entry in crl),
            crl=crl,
            issuer=issuer,
        )
    raise CrlProblem("; ".join(problems))
