"""Helpers for the store tests: a settable clock and a thread race starter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

T = TypeVar("T")

START = datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)


class FakeClock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


def run_concurrently(n: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..n-1) in n threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def start(i: int) -> T:
        barrier.wait(timeout=10)
        return work(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(start, range(n)))
