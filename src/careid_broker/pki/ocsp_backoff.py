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

Where the state lives is `ResponderStates`: in this process (`MemoryResponderStates`),
or in the store (`careid_broker.store.ResponderStateTable`), so that every worker and
every instance skips a responder as soon as one has found it down, and asks it again as
soon as one has found it back.

Times come from the caller (the validator's injected clock) so tests are deterministic.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from careid_broker.pki.config import normalise_url

logger = logging.getLogger(__name__)

#: Responder URLs come from certificates that already chained to our anchors, so there
#: are few; the cap only keeps a misbehaving CA from growing this without bound.
MAX_RESPONDERS = 1024


@dataclass(frozen=True, kw_only=True)
class ResponderState:
    """One responder being skipped."""

    since: datetime
    """When the responder first failed in this spell."""
    until: datetime
    """Skip it before this time; the first request at or after it probes."""
    reason: str


class SkippedResponder(Protocol):
    """What is known of a responder being skipped (read-only)."""

    @property
    def since(self) -> datetime: ...

    @property
    def until(self) -> datetime: ...

    @property
    def reason(self) -> str: ...


class ResponderStates(Protocol):
    """Where back-off state lives (keys are normalised responder URLs)."""

    def get(self, key: str) -> SkippedResponder | None:
        """The responder's state, or None when it is not being skipped."""
        ...

    def take_probe(self, key: str, now: datetime, lease_until: datetime) -> bool:
        """Atomically extend an entry whose time has run out (`until <= now`) to
        `lease_until`; True for the one caller that did, who then probes."""
        ...

    def mark_failed(self, key: str, now: datetime, until: datetime, reason: str) -> datetime:
        """Skip the responder until `until`; the start of its spell of failures."""
        ...

    def clear(self, key: str) -> SkippedResponder | None:
        """Stop skipping the responder; what its state was, if any."""
        ...

    def skipped(self, now: datetime) -> dict[str, datetime]:
        """Every responder skipped at `now`, and until when."""
        ...

    def clear_all(self) -> None:
        """Stop skipping every responder."""
        ...


class MemoryResponderStates:
    """Back-off state in this process only (tests, a single-process broker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, ResponderState] = OrderedDict()

    def get(self, key: str) -> ResponderState | None:
        with self._lock:
            return self._entries.get(key)

    def take_probe(self, key: str, now: datetime, lease_until: datetime) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now < entry.until:
                return False
            self._entries[key] = ResponderState(
                since=entry.since, until=lease_until, reason=entry.reason
            )
            return True

    def mark_failed(self, key: str, now: datetime, until: datetime, reason: str) -> datetime:
        with self._lock:
            entry = self._entries.get(key)
            since = entry.since if entry is not None else now
            self._entries[key] = ResponderState(since=since, until=until, reason=reason)
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_RESPONDERS:
                self._entries.popitem(last=False)
            return since

    def clear(self, key: str) -> ResponderState | None:
        with self._lock:
            return self._entries.pop(key, None)

    def skipped(self, now: datetime) -> dict[str, datetime]:
        with self._lock:
            return {key: e.until for key, e in self._entries.items() if now < e.until}

    def clear_all(self) -> None:
        with self._lock:
            self._entries.clear()


class ResponderBackoff:
    """Which OCSP responders are being skipped, and until when. Thread-safe."""

    def __init__(self, period: timedelta, states: ResponderStates | None = None) -> None:
        self._period = period
        self._states: ResponderStates = states if states is not None else MemoryResponderStates()

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
        entry = self._states.get(key)
        if entry is None:
            return None
        if now < entry.until or not self._states.take_probe(key, now, now + self._period):
            # Still down; or another worker took the probe a moment ago.
            current = self._states.get(key) or entry
            return f"it failed ({current.reason}) and is skipped until {current.until.isoformat()}"
        return None

    def failed(self, url: str, now: datetime, reason: str) -> None:
        """The responder gave no usable answer: skip it for the period from `now`."""
        if not self.enabled:
            return
        key = normalise_url(url)
        since = self._states.mark_failed(key, now, now + self._period, reason)
        seconds = self._period.total_seconds()
        if since == now:
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
                since.isoformat(),
                reason,
                seconds,
            )

    def answered(self, url: str, now: datetime) -> None:
        """The responder answered (whatever it said): it is up, stop skipping it."""
        if not self.enabled:
            return
        entry = self._states.clear(normalise_url(url))
        if entry is not None:
            logger.info(
                "OCSP responder %s answers again (down since %s, for %s); back-off cleared",
                url,
                entry.since.isoformat(),
                now - entry.since,
            )

    def backed_off(self, now: datetime) -> dict[str, datetime]:
        """Responders being skipped at `now` and until when (for metrics and tests)."""
        return self._states.skipped(now)

    def clear(self) -> None:
        """Ask every responder again at once (e.g. after the operator fixed one)."""
        self._states.clear_all()
