"""The tests' one settable clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class FakeClock:
    """A settable, thread-safe UTC clock: tests move time instead of sleeping.

    It starts at `start`, or at the real time (signed cookies and the devkit's OCSP
    server compare with real time where a test does not set one).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    @property
    def now(self) -> datetime:
        with self._lock:
            return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        with self._lock:
            self._now = value

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta
