"""`RevocationObserver`: told what revocation checking did, for the broker's metrics."""

from __future__ import annotations

from typing import Protocol

from careid_broker.pki.status import RevocationSource


class RevocationObserver(Protocol):
    """Hears of cache lookups and failed fetches; must never raise."""

    def cache_lookup(self, source: RevocationSource, *, hit: bool) -> None:
        """A check looked in the OCSP answer cache or the CRL cache."""
        ...

    def fetch_failed(self, source: RevocationSource) -> None:
        """Asking a responder, or fetching a CRL, gave nothing usable."""
        ...


class _Unobserved:
    def cache_lookup(self, source: RevocationSource, *, hit: bool) -> None:
        pass

    def fetch_failed(self, source: RevocationSource) -> None:
        pass


#: Nobody listening (a validator built without the broker's metrics).
UNOBSERVED: RevocationObserver = _Unobserved()
