"""Shared types of certificate validation: the clock and a revocation status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum, unique

from cryptography import x509

#: Passed in so tests decide what "now" is (STYLE.md: dependencies through constructors).
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def utc_now(clock: Clock) -> datetime:
    """The clock's time as an aware UTC datetime (a naive one is taken to be UTC)."""
    moment = clock()
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@unique
class RevocationSource(StrEnum):
    """Where a revocation status came from (recorded in the audit trail)."""

    OCSP = "ocsp"
    CRL = "crl"


@dataclass(frozen=True, kw_only=True)
class RevocationStatus:
    """A verified "not revoked" answer for one certificate."""

    source: RevocationSource
    cached: bool
    """Served from the cache (a response fetched earlier, still before its nextUpdate)."""
    this_update: datetime
    next_update: datetime | None
    location: str
    """The responder URL, distribution point URL or CRL file that answered."""


def describe(certificate: x509.Certificate) -> str:
    """`serial 1A2B… issued by CN=…` for operator log details."""
    issuer = certificate.issuer.rfc4514_string()
    return f"serial {certificate.serial_number:X} issued by {issuer}"
