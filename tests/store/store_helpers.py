"""Helpers for the store tests: a settable clock and a thread race starter."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

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


@contextmanager
def fresh_pg_database(admin_url: URL, prefix: str) -> Iterator[URL]:
    """Create a uniquely named PostgreSQL database; drop it (forcibly) afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
