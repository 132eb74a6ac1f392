"""`RevocationSharing`: where revocation state lives and who hears of revocations.

By default each validator keeps its OCSP back-off, answers and CRLs in its own process
and tells nobody what a CRL revokes. The broker passes the store's tables, so that every
worker and instance agrees at once, a handler that ends a revoked card's sessions, and
an observer that counts cache hits and failed fetches.
"""

from __future__ import annotations

from dataclasses import dataclass

from careid_broker.pki.crl import RevokedHandler
from careid_broker.pki.crl_shared import SharedCrls
from careid_broker.pki.observer import UNOBSERVED, RevocationObserver
from careid_broker.pki.ocsp_backoff import ResponderStates
from careid_broker.pki.ocsp_cache import OcspAnswerCache


@dataclass(frozen=True, kw_only=True)
class RevocationSharing:
    """Shared revocation state and the revocation handler (None: this process alone)."""

    responders: ResponderStates | None = None
    """Which OCSP responders are being skipped (back-off)."""
    answers: OcspAnswerCache | None = None
    """Verified OCSP answers."""
    crls: SharedCrls | None = None
    """The newest CRL of each source and issuer."""
    on_revoked: RevokedHandler | None = None
    """Told of the certificates a newly fetched CRL lists."""
    observer: RevocationObserver = UNOBSERVED
    """Told of cache lookups and failed fetches (metrics)."""


PROCESS_ONLY = RevocationSharing()
