"""The session lock: a card-removed report ends the session that card opened.

The agent reports `POST /card/removed {"cardSession": S}` with no cookie: S is the only
credential, a 256-bit secret handed to the agent at sign-in and kept in the store only
as a hash. Whatever the report names — an active session, an ended one, nothing at all —
the answer is the same, so the endpoint reveals nothing. Because it is unauthenticated,
reports that end nothing are rate-limited per client address (`WindowLimiter`); S itself
cannot be guessed. A report that ends a session is never refused, so junk sent from one
workstation behind a shared NAT address cannot keep another's card removal from ending
its session; past the limit the answers differ (204 for it, 429 for junk), which tells
only that the report has just ended the session it named.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from careid_broker.metrics import BrokerMetrics
from careid_broker.signin.sessions import SigninSessions
from careid_broker.store import EndedSession, EndReason

#: What the agent accepts as a card-session reference (its `CARD_SESSION_RE`), so a
#: report the agent could never have sent is not even looked up.
CARD_SESSION_RE = re.compile(r"[A-Za-z0-9._~-]{16,256}")


class SessionLock:
    """Ends the session a card-session reference names."""

    def __init__(
        self,
        *,
        sessions: SigninSessions,
        metrics: BrokerMetrics,
        keep_on_removal: frozenset[str] = frozenset(),
    ) -> None:
        self._sessions = sessions
        # Relying parties whose `card_removal = "none"`: the session still ends (no one
        # else can use it at this workstation), but they keep their own sign-in.
        self._keep = keep_on_removal
        self._removals = metrics.registry.counter(
            "careid_card_removals_total", "Sessions ended because their card was removed."
        )
        self._not_armed = metrics.registry.counter(
            "careid_card_lock_not_armed_total",
            "Card sign-ins the agent did not take the card lock for, ended by the page.",
        )

    def card_removed(
        self, card_session: object, *, lock_not_armed: bool = False
    ) -> EndedSession | None:
        """End the active session with that card session; the ended session, or None.

        Its relying parties are told (back-channel logout queued in the same database
        transaction as the ending), except those that keep their sign-in on removal,
        and the ending is audited. A session found past its idle or absolute limit ends
        as expired, keeping no one's sign-in, and is not counted as a removal.
        """
        if not isinstance(card_session, str) or not CARD_SESSION_RE.fullmatch(card_session):
            return None
        ended = self._sessions.end_by_card_session(
            card_session, keep_clients=self._keep, lock_not_armed=lock_not_armed
        )
        if ended is not None and ended.reason == EndReason.CARD_REMOVED:
            self._removals.inc()
        elif ended is not None and ended.reason == EndReason.LOCK_NOT_ARMED:
            self._not_armed.inc()
        return ended


@dataclass(kw_only=True, slots=True)
class _Window:
    started: float
    count: int


class WindowLimiter:
    """At most `limit` events per key in each fixed window, counted in this process.

    In memory on purpose: the point is to turn a flood away cheaply, so counting in the
    database would defeat it. With several workers each allows `limit`.
    """

    def __init__(
        self,
        *,
        limit: int,
        window: timedelta,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self._limit = limit
        self._window = window.total_seconds()
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float | None:
        """None when the event is allowed (and counted); else seconds until it would be."""
        now = self._clock()
        with self._lock:
            current = self._windows.get(key)
            if current is None or now - current.started >= self._window:
                if current is None and len(self._windows) >= self._max_keys:
                    self._prune(now)
                self._windows[key] = _Window(started=now, count=1)
                return None
            if current.count >= self._limit:
                return max(0.0, current.started + self._window - now)
            current.count += 1
            return None

    def _prune(self, now: float) -> None:
        stale = [key for key, w in self._windows.items() if now - w.started >= self._window]
        for key in stale:
            del self._windows[key]
        if len(self._windows) >= self._max_keys:
            # Still full of live windows (a flood from many addresses): forgetting them
            # lets a few extra reports through, which is better than unbounded memory.
            self._windows.clear()
