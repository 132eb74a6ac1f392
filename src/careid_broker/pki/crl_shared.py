"""The newest CRL of each source and issuer, shared by every worker and instance.

A worker offers the CRLs it fetches and takes newer ones from the table, but trusts a
row only once it verifies here as a fetched CRL would: the table is a place to find
CRLs, not an authority on them.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from careid_broker.pki.crl_checks import CrlProblem, verify_crl

logger = logging.getLogger(__name__)


class SharedCrls(Protocol):
    """The newest CRL of each source and issuer any worker or instance has fetched
    (`careid_broker.store.SharedCrlTable`), by a key `CrlCache` makes."""

    def newest(self, key: str) -> datetime | None:
        """The lastUpdate of the newest CRL offered under `key`, if any."""

    def load(self, key: str) -> bytes | None:
        """That CRL, as its issuer signed it (DER)."""

    def offer(self, key: str, *, der: bytes, last_update: datetime, location: str) -> None:
        """Keep this CRL under `key` unless a newer one is kept already."""


class CrlExchange:
    """Offers CRLs to the shared table and takes newer ones from it, verified."""

    def __init__(self, table: SharedCrls | None, *, skew: timedelta) -> None:
        self._table = table
        self._skew = skew
        self._lock = threading.Lock()
        # Shared CRLs (by their lastUpdate) that did not verify here: not read again.
        self._rejected: dict[str, datetime] = {}

    def offer(self, key: str, crl: x509.CertificateRevocationList, *, location: str) -> None:
        """Offer a CRL this process fetched to the other workers and instances."""
        if self._table is None:
            return
        try:
            self._table.offer(
                key,
                der=crl.public_bytes(Encoding.DER),
                last_update=crl.last_update_utc,
                location=location,
            )
        except Exception as exc:  # noqa: BLE001 - this process's CRL still stands
            logger.warning("could not share the CRL from %s: %s", location, exc)

    def newer(
        self,
        key: str,
        *,
        issuer: x509.Certificate,
        than: datetime | None,
        now: datetime,
        location: str,
    ) -> tuple[x509.CertificateRevocationList, datetime] | None:
        """The shared CRL and its nextUpdate, when one later than `than` (None: any)
        verifies against `issuer` as a fetched CRL would (issuer, signature, scope,
        thisUpdate); staleness is the caller's to judge. A row that cannot be read or
        does not verify counts as none (and is logged)."""
        if self._table is None:
            return None
        try:
            newest = self._table.newest(key)
            if newest is None or (than is not None and newest <= than):
                return None
            with self._lock:
                if self._rejected.get(key) == newest:
                    return None  # this one was found wanting already: not again each time
            der = self._table.load(key)
        except Exception as exc:  # noqa: BLE001 - the caller falls back on what it has
            logger.warning("could not read the shared CRL for %s: %s", location, exc)
            return None
        if der is None:
            return None
        try:
            crl = x509.load_der_x509_crl(der)
            next_update = verify_crl(crl, issuer, now=now, skew=self._skew)
        except (ValueError, CrlProblem) as exc:
            logger.warning("a shared CRL for %s does not verify: %s", location, exc)
            with self._lock:
                self._rejected[key] = newest
            return None
        if than is not None and crl.last_update_utc <= than:
            return None  # the row said newer; the CRL itself is what counts
        return crl, next_update
