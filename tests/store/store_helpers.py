"""Helpers for the store tests: a settable clock and a thread race starter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")

START = datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)


def run_concurrently(n: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..n-1) in n threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def start(i: int) -> T:
        barrier.wait(timeout=10)
        return work(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(start, range(n)))
