"""Back-off for OCSP responders that are down: skip a failed responder for a while.

Without it, while a responder is down every card sign-in waits the full OCSP timeout
(seconds, per tap) before the CRL fallback or the refusal. After a responder fails —
timeout, connection error, or no usable OCSP answer — it is skipped for
`[pki.ocsp] failure_backoff_seconds`: checks go straight to the fallback, or in pure
`ocsp` mode straight to "revocation unavailable". Skipping only ever removes a source
of "good", so this never accepts a card the responder would have refused; a definite
answer (good, revoked, unknown) never starts a back-off.

When the period ends, the first request to come along probes the responder again. It
takes a lease on the next period as it does so, so concurrent requests keep skipping
rather than all waiting on a responder that may still be down — and a probe that dies
unexpectedly cannot leave the responder skipped for ever: the lease simply runs out.

Times come from the caller (the validator's injected clock) so tests are deterministic.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from careid_broker.pki.config import normalise_url

logger = logging.getLogger(__name__)

#: Responder URLs come from certificates that already chained to our anchors, so there
#: are few; the cap only keeps a misbehaving CA from growing this without bound.
MAX_RESPONDERS = 1024


@dataclass(kw_only=True)
class _Entry:
    since: datetime
    """When the responder first failed in this spell."""
    until: datetime
    """Skip it before this time; the first request at or after it probes."""
    reason: str


class ResponderBackoff:
    """Which OCSP responders are being skipped, and until when. Thread-safe."""

    def __init__(self, period: timedelta) -> None:
        self._period = period
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when `failure_backoff_seconds = 0`: every request asks the responder."""
        return self._period > timedelta(0)

    def skip_reason(self, url: str, now: datetime) -> str | None:
        """Why the responder at `url` must not be asked now, or None to ask it.

        None past the end of a back-off means the caller is the probe: it holds the
        lease on the next period until it reports `failed` or `answered`.
        """
        if not self.enabled:
            return None
        key = normalise_url(url)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now < entry.until:
                return f"it failed ({entry.reason}) and is skipped until {entry.until.isoformat()}"
            entry.until = now + self._period
            return None

    def failed(self, url: str, now: datetime, reason: str) -> None:
        """The responder gave no usable answer: skip it for the period from `now`."""
        if not self.enabled:
            return
        key = normalise_url(url)
        until = now + self._period
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(since=now, until=until, reason=reason)
                while len(self._entries) > MAX_RESPONDERS:
                    self._entries.popitem(last=False)
            else:
                entry.until = until
                entry.reason = reason
                self._entries.move_to_end(key)
        seconds = self._period.total_seconds()
        if entry is None:
            logger.warning(
                "OCSP responder %s failed (%s): skipping it for %gs; revocation checks go"
                " straight to the fallback meanwhile",
                url,
                reason,
                seconds,
            )
        else:
            logger.warning(
                "OCSP responder %s still failing since %s (%s): skipping it for another %gs",
                url,
                entry.since.isoformat(),
                reason,
                seconds,
            )

    def answered(self, url: str, now: datetime) -> None:
        """The responder answered (whatever it said): it is up, stop skipping it."""
        if not self.enabled:
            return
        key = normalise_url(url)
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            logger.info(
                "OCSP responder %s answers again (down since %s, for %s); back-off cleared",
                url,
                entry.since.isoformat(),
                now - entry.since,
            )

    def backed_off(self, now: datetime) -> dict[str, datetime]:
        """Responders being skipped at `now` and until when (for metrics and tests)."""
        with self._lock:
            return {key: e.until for key, e in self._entries.items() if now < e.until}

    def clear(self) -> None:
        """Ask every responder again at once (e.g. after the operator fixed one)."""
        with self._lock:
            self._entries.clear()
