"""Certificate validation for card sign-in: chain, validity, usage, policy, revocation, UUID.

`CertificateValidator(PkiConfig.from_mapping(...), clock=..., http=UrllibFetcher())`
then `validate(der)` → `ValidatedCertificate`, or a `BrokerError` subclass naming what
was wrong (`careid_broker.errors`). See `validator` for the order of the checks.
"""

from __future__ import annotations

from careid_broker.pki.config import (
    CrlSettings,
    OcspResponderSettings,
    OcspSettings,
    PkiConfig,
    PolicyMatch,
    RevocationMode,
)
from careid_broker.pki.http import HttpFetcher, HttpFetchError, UrllibFetcher
from careid_broker.pki.revocation import RevocationChecker, RevocationOutcome
from careid_broker.pki.status import Clock, RevocationSource, RevocationStatus, system_clock
from careid_broker.pki.validator import (
    CertificateValidator,
    TrustedCertificate,
    ValidatedCertificate,
    identify,
    parse_certificate,
)

__all__ = [
    "CertificateValidator",
    "Clock",
    "CrlSettings",
    "HttpFetchError",
    "HttpFetcher",
    "OcspResponderSettings",
    "OcspSettings",
    "PkiConfig",
    "PolicyMatch",
    "RevocationChecker",
    "RevocationMode",
    "RevocationOutcome",
    "RevocationSource",
    "RevocationStatus",
    "UrllibFetcher",
    "TrustedCertificate",
    "ValidatedCertificate",
    "identify",
    "parse_certificate",
    "system_clock",
]
