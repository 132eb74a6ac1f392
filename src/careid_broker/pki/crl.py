"""CRL checking (RFC 5280 §5, §6.3): distribution points or configured files, cached.

A CRL is fetched (or read) once, verified against the issuer that signed the
certificate in question, and served from memory until its nextUpdate. A background
thread (`start()`/`stop()`, or `refresh_due()` called directly) fetches each cached CRL
afresh before it goes stale, so sign-ins do not wait on the download. A CRL past its
nextUpdate (beyond the clock skew) is never used: the check fails closed.

With `shared` (the store), a worker that fetches a newer CRL than the others hold (its
own refresh, or an administrator's "refresh now") offers it there, and every other
worker and instance takes it up at its next check of that issuer, verifying it again:
a card one worker has seen revoked is refused by all, not only after each one's own
next refresh. A worker that has no CRL of its own yet, or only a stale one, is held to
the table too: it never uses a fetched CRL older than the one shared (a lagging mirror
or a replay), and when its fetch fails it uses the shared CRL while that is fresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum, unique
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki.certfiles import parse_crl
from careid_broker.pki.config import CrlSettings
from careid_broker.pki.crl_checks import CrlProblem, check_covers, is_stale, verify_crl
from careid_broker.pki.crl_shared import CrlExchange, SharedCrls
from careid_broker.pki.http import HttpFetcher, HttpFetchError
from careid_broker.pki.observer import UNOBSERVED, RevocationObserver
from careid_broker.pki.status import Clock, RevocationSource, RevocationStatus, describe, utc_now

logger = logging.getLogger(__name__)

#: The background thread wakes at most this far apart (seconds of real time).
MAX_POLL_SECONDS = 60.0


@unique
class SourceKind(StrEnum):
    """Where a CRL comes from."""

    URL = "url"
    FILE = "file"


@dataclass(frozen=True, kw_only=True)
class CrlSource:
    """A distribution point URL or a configured CRL file."""

    kind: SourceKind
    location: str


@dataclass(frozen=True, kw_only=True)
class _Entry:
    crl: x509.CertificateRevocationList
    next_update: datetime
    fetched_at: datetime
    file_stamp: tuple[int, int, int] | None


_Key = tuple[CrlSource, bytes]


def _shared_key(key: _Key) -> str:
    source, fingerprint = key
    return hashlib.sha256(fingerprint + b"\n" + source.location.encode("utf-8")).hexdigest()


def distribution_points(certificate: x509.Certificate) -> list[str]:
    """The certificate's full-CRL http(s) distribution point URLs (RFC 5280 §4.2.1.13).

    Points naming another CRL issuer (indirect CRLs) or only some reasons (partitioned
    CRLs) are skipped: neither alone says whether the certificate is revoked.
    """
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls: list[str] = []
    for point in points:
        if point.crl_issuer or point.reasons or not point.full_name:
            continue
        urls.extend(
            name.value
            for name in point.full_name
            if isinstance(name, x509.UniformResourceIdentifier)
            and name.value.lower().startswith(("http://", "https://"))
        )
    return urls


def read_crl(
    location: str, *, is_file: bool, http: HttpFetcher, timeout: float
) -> x509.CertificateRevocationList:
    """A CRL read from a file or fetched from a URL, and parsed (not yet verified);
    `CrlProblem` when it cannot be had or is not a CRL."""
    try:
        data = Path(location).read_bytes() if is_file else http.get(location, timeout)
    except (HttpFetchError, OSError) as exc:
        raise CrlProblem(f"cannot fetch: {exc}") from exc
    try:
        return parse_crl(data, source=location)
    except ValueError as exc:
        raise CrlProblem(str(exc)) from exc


def _file_stamp(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


#: Told (issuer DN, serial numbers) of certificates a fetched CRL newly lists as revoked.
RevokedHandler = Callable[[str, frozenset[int]], None]


class CrlCache:
    """Answers "is this certificate on its issuer's CRL?" from verified, fresh CRLs."""

    def __init__(
        self,
        settings: CrlSettings,
        *,
        clock: Clock,
        http: HttpFetcher,
        max_clock_skew: timedelta,
        on_revoked: RevokedHandler | None = None,
        observer: RevocationObserver = UNOBSERVED,
        shared: SharedCrls | None = None,
    ) -> None:
        self._settings = settings
        self._shared = CrlExchange(shared, skew=max_clock_skew)
        self._observer = observer
        self._clock = clock
        self._http = http
        self._skew = max_clock_skew
        self._on_revoked = on_revoked
        self._lock = threading.Lock()
        self._entries: dict[_Key, _Entry] = {}
        self._issuers: dict[bytes, x509.Certificate] = {}
        self._fetch_locks: dict[_Key, threading.Lock] = {}
        # Configured files found to hold another issuer's CRL, by file stamp: not reread
        # on every sign-in while unchanged.
        self._foreign: dict[_Key, tuple[int, int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """Not revoked as a status; on the CRL: CertificateRevokedError; else unavailable."""
        status = self.check_if_named(certificate, issuer)
        if status is not None:
            return status
        if not self._sources(certificate):
            raise RevocationUnavailableError(
                detail=f"no CRL source for {describe(certificate)}: it has no http(s)"
                " distribution point and no CRL file is configured"
            )
        raise RevocationUnavailableError(
            detail=f"no usable CRL for {describe(certificate)}: no configured CRL file is"
            " from this issuer"
        )

    def check_if_named(
        self, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> RevocationStatus | None:
        """As `check`, but None where no CRL source is the issuer's: the certificate names
        no http(s) distribution point (or they are not used) and no configured file holds
        the issuer's CRL. A source that is the issuer's, or may be (a file that cannot be
        read), and gives no usable answer is unavailable, as in `check`."""
        now = utc_now(self._clock)
        sources = self._sources(certificate)
        problems: list[str] = []
        for source in sources:
            try:
                entry, cached = self._entry(source, issuer, now)
            except CrlProblem as exc:
                # A configured file may hold another issuer's CRL: not this one's source.
                if not (exc.other_issuer and source.kind is SourceKind.FILE):
                    problems.append(f"{source.location}: {exc}")
                continue
            try:
                # Another partition's CRL (a file for other cards, or one served at this
                # card's distribution point) says nothing of this certificate.
                check_covers(entry.crl, certificate)
            except CrlProblem as exc:
                problems.append(f"{source.location}: {exc}")
                continue
            revoked = entry.crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
            if revoked is not None:
                raise CertificateRevokedError(
                    detail=f"CRL ({source.location}): {describe(certificate)} revoked at"
                    f" {revoked.revocation_date_utc.isoformat()}{_reason(revoked)}"
                )
            return RevocationStatus(
                source=RevocationSource.CRL,
                cached=cached,
                this_update=entry.crl.last_update_utc,
                next_update=entry.next_update,
                location=source.location,
            )
        if not problems:
            return None
        raise RevocationUnavailableError(
            detail=f"no usable CRL for {describe(certificate)}: {'; '.join(problems)}"
        )

    def adopt(
        self,
        location: str,
        *,
        is_file: bool,
        issuer: x509.Certificate,
        crl: x509.CertificateRevocationList,
    ) -> None:
        """Keep a CRL fetched and verified elsewhere in this process (an administrator's
        refresh) and offer it to the other workers; what it revokes is the caller's to
        act on (it is not reported again here)."""
        now = utc_now(self._clock)
        try:
            next_update = verify_crl(crl, issuer, now=now, skew=self._skew)
        except CrlProblem as exc:  # verified by the caller a moment ago: nothing to keep
            logger.warning("not keeping the CRL from %s: %s", location, exc)
            return
        source = CrlSource(kind=SourceKind.FILE if is_file else SourceKind.URL, location=location)
        key: _Key = (source, issuer.fingerprint(hashes.SHA256()))
        stamp = None
        if is_file:
            try:
                stamp = _file_stamp(location)
            except OSError:
                stamp = None
        if self._install(key, issuer, crl, next_update, now, stamp, report=False).crl is crl:
            self._share(key, crl)

    def refresh_all(self) -> int:
        """Fetch afresh every CRL this process holds, due or not (an administrator's
        "refresh the CRLs now"); the number fetched successfully."""
        return self.refresh_due(force=True)

    def refresh_due(self, *, force: bool = False) -> int:
        """Fetch afresh every cached CRL that is due; the number fetched successfully.

        Due: fetched `refresh_interval` ago, or within `refresh_interval` of its
        nextUpdate, or (a file) changed on disk. A failed refresh keeps the old CRL
        (usable until its nextUpdate) and is logged.
        """
        now = utc_now(self._clock)
        interval = self._settings.refresh_interval
        with self._lock:
            entries = list(self._entries.items())
        refreshed = 0
        for (source, fingerprint), entry in entries:
            due = (
                force
                or now >= entry.fetched_at + interval
                or now >= entry.next_update - interval
                or self._file_changed(source, entry)
            )
            if not due:
                continue
            issuer = self._issuers[fingerprint]
            try:
                self._observed_fetch((source, fingerprint), source, issuer, now)
            except CrlProblem as exc:
                logger.warning("could not refresh the CRL from %s: %s", source.location, exc)
                continue
            refreshed += 1
        return refreshed

    def start(self) -> None:
        """Refresh cached CRLs in a background thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        poll = min(MAX_POLL_SECONDS, self._settings.refresh_interval.total_seconds() / 2)
        self._thread = threading.Thread(
            target=self._run, args=(poll,), name="careid-crl-refresh", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (waits for a refresh in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self, poll: float) -> None:
        while not self._stop.wait(poll):
            try:
                self.refresh_due()
            except Exception:
                # The refresher must outlive a surprise; sign-ins fetch on demand anyway.
                logger.exception("the CRL refresher hit an unexpected error")

    def _sources(self, certificate: x509.Certificate) -> list[CrlSource]:
        # Configured files first: an operator who configured one wants it used.
        sources = [
            CrlSource(kind=SourceKind.FILE, location=str(path)) for path in self._settings.files
        ]
        if self._settings.use_distribution_points:
            sources.extend(
                CrlSource(kind=SourceKind.URL, location=url)
                for url in distribution_points(certificate)
            )
        return sources

    def _entry(
        self, source: CrlSource, issuer: x509.Certificate, now: datetime
    ) -> tuple[_Entry, bool]:
        """A verified, not-stale CRL for this source and issuer, and whether it was cached."""
        key: _Key = (source, issuer.fingerprint(hashes.SHA256()))
        entry = self._cached(key)
        if entry is not None and now < entry.next_update and not self._file_changed(source, entry):
            self._observer.cache_lookup(RevocationSource.CRL, hit=True)
            return self._caught_up(key, source, issuer, entry, now), True
        if source.kind is SourceKind.FILE:
            with self._lock:
                foreign = self._foreign.get(key)
            try:
                unchanged = foreign is not None and _file_stamp(source.location) == foreign
            except OSError:
                unchanged = False
            if unchanged:
                raise CrlProblem("another issuer's CRL", other_issuer=True)
        with self._fetch_lock(key):
            # Another sign-in may have fetched it while we waited.
            entry = self._cached(key)
            if entry is not None and now < entry.next_update:
                if not self._file_changed(source, entry):
                    self._observer.cache_lookup(RevocationSource.CRL, hit=True)
                    return entry, True
            self._observer.cache_lookup(RevocationSource.CRL, hit=False)
            try:
                return self._observed_fetch(key, source, issuer, now), False
            except CrlProblem as exc:
                if exc.other_issuer:
                    raise
                # The distribution point is down, or gave nothing usable: a fresh CRL
                # another worker or instance fetched (and this one verifies) answers.
                taken = self._taken_from_shared(key, source, issuer, entry, now)
                if taken is not None:
                    return taken, True
                # Between nextUpdate and nextUpdate + skew the old CRL still counts.
                if entry is not None and not is_stale(entry.next_update, now, self._skew):
                    return entry, True
                raise

    def _observed_fetch(
        self, key: _Key, source: CrlSource, issuer: x509.Certificate, now: datetime
    ) -> _Entry:
        """`_fetch`, telling the observer when it gives nothing usable."""
        try:
            return self._fetch(key, source, issuer, now)
        except CrlProblem as exc:
            # Another issuer's CRL in a configured file is not a failure: that file is
            # for someone else.
            if not exc.other_issuer:
                self._observer.fetch_failed(RevocationSource.CRL)
            raise

    def _fetch(
        self, key: _Key, source: CrlSource, issuer: x509.Certificate, now: datetime
    ) -> _Entry:
        stamp: tuple[int, int, int] | None = None
        is_file = source.kind is SourceKind.FILE
        if is_file:
            try:
                stamp = _file_stamp(source.location)
            except OSError as exc:
                raise CrlProblem(f"cannot fetch: {exc}") from exc
        timeout = self._settings.timeout_seconds
        crl = read_crl(source.location, is_file=is_file, http=self._http, timeout=timeout)
        try:
            next_update = verify_crl(crl, issuer, now=now, skew=self._skew)
        except CrlProblem as exc:
            if exc.other_issuer and stamp is not None:
                with self._lock:
                    self._foreign[key] = stamp
            raise
        fetched = crl
        # A worker that has no CRL yet (or only a stale one) compares with the table:
        # what the distribution point serves may be older than what another worker or
        # instance already fetched (a lagging mirror, or a replay over plain HTTP).
        shared = self._shared.newer(
            _shared_key(key),
            issuer=issuer,
            than=crl.last_update_utc,
            now=now,
            location=source.location,
        )
        if shared is not None:
            logger.warning(
                "the CRL from %s (thisUpdate %s) is older than the one shared by another"
                " worker or instance: using that one",
                source.location,
                fetched.last_update_utc.isoformat(),
            )
            crl, next_update = shared
        fresh = self._install(key, issuer, crl, next_update, now, stamp)
        if fresh.crl is fetched:
            self._share(key, fetched)
        if is_stale(fresh.next_update, now, self._skew):
            raise CrlProblem(
                f"the CRL is stale: nextUpdate {fresh.next_update.isoformat()} has passed"
            )
        return fresh

    def _install(
        self,
        key: _Key,
        issuer: x509.Certificate,
        crl: x509.CertificateRevocationList,
        next_update: datetime,
        now: datetime,
        stamp: tuple[int, int, int] | None,
        *,
        report: bool = True,
    ) -> _Entry:
        """Keep a verified CRL unless an older one than this process holds; the entry
        kept. The certificates it newly lists are reported (with `report`)."""
        fresh = _Entry(crl=crl, next_update=next_update, fetched_at=now, file_stamp=stamp)
        with self._lock:
            old = self._entries.get(key)
            # Never step back to an older CRL (a replayed or lagging mirror).
            if old is None or crl.last_update_utc >= old.crl.last_update_utc:
                self._entries[key] = fresh
                self._issuers[key[1]] = issuer
            else:
                logger.warning("ignoring a CRL from %s older than the one cached", key[0].location)
                fresh = old
        if fresh is not old and report:
            self._report_revoked(issuer, fresh.crl, old.crl if old is not None else None)
        return fresh

    def _share(self, key: _Key, crl: x509.CertificateRevocationList) -> None:
        """Offer a CRL this process fetched to the other workers and instances."""
        self._shared.offer(_shared_key(key), crl, location=key[0].location)

    def _caught_up(
        self,
        key: _Key,
        source: CrlSource,
        issuer: x509.Certificate,
        entry: _Entry,
        now: datetime,
    ) -> _Entry:
        """`entry`, or the newer CRL another worker or instance fetched, once verified
        here as if fetched (a row that does not verify is ignored, and logged)."""
        return self._taken_from_shared(key, source, issuer, entry, now) or entry

    def _taken_from_shared(
        self,
        key: _Key,
        source: CrlSource,
        issuer: x509.Certificate,
        entry: _Entry | None,
        now: datetime,
    ) -> _Entry | None:
        """The shared CRL, kept as this process's own, when it is newer than `entry`
        (or there is none), verifies here and is not stale; else None."""
        shared = self._shared.newer(
            _shared_key(key),
            issuer=issuer,
            than=entry.crl.last_update_utc if entry is not None else None,
            now=now,
            location=source.location,
        )
        if shared is None:
            return None
        crl, next_update = shared
        if is_stale(next_update, now, self._skew):
            return None
        stamp = entry.file_stamp if entry is not None else None
        return self._install(key, issuer, crl, next_update, now, stamp)

    def _report_revoked(
        self,
        issuer: x509.Certificate,
        crl: x509.CertificateRevocationList,
        before: x509.CertificateRevocationList | None,
    ) -> None:
        """Tell the handler which serials this CRL lists that the one before did not
        (all of them for the first CRL of an issuer this process has seen)."""
        if self._on_revoked is None:
            return
        known = {r.serial_number for r in before} if before is not None else set()
        new = frozenset(r.serial_number for r in crl if r.serial_number not in known)
        if not new:
            return
        try:
            self._on_revoked(issuer.subject.rfc4514_string(), new)
        except Exception:  # noqa: BLE001 - a CRL fetch must not fail on what follows it
            logger.exception("acting on newly revoked certificates failed")

    def _cached(self, key: _Key) -> _Entry | None:
        with self._lock:
            return self._entries.get(key)

    def _fetch_lock(self, key: _Key) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault(key, threading.Lock())

    @staticmethod
    def _file_changed(source: CrlSource, entry: _Entry) -> bool:
        if source.kind is not SourceKind.FILE:
            return False
        try:
            return _file_stamp(source.location) != entry.file_stamp
        except OSError:
            return True


def _reason(revoked: x509.RevokedCertificate) -> str:
    try:
        reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return ""
    return f" ({reason.value})"
