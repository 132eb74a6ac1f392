"""Store fixtures: every test runs on SQLite and, when configured, on PostgreSQL.

The databases are broker_fixtures' `store_url` (loaded for every folder by
tests/conftest.py): an empty database migrated to head, on each backend. PostgreSQL runs
when CAREID_TEST_DATABASE_URL names a server we may create databases on (CI sets it;
locally: postgresql+psycopg://postgres@127.0.0.1:5432/test). A fresh database is created
for the test session and dropped afterwards (the named database is never written to);
tests are isolated by emptying every table before each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from store_helpers import START, run_concurrently

from careid_broker.store import Repositories, Store, create_store
from support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    s = create_store(store_url, clock=clock, busy_timeout=timedelta(seconds=20))
    yield s
    s.dispose()


@pytest.fixture
def other_store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    """A second engine on the same database: a second broker instance."""
    s = create_store(store_url, clock=clock, busy_timeout=timedelta(seconds=20))
    yield s
    s.dispose()


@pytest.fixture
def repos(store: Store) -> Repositories:
    # Test material: a fixed key, so that a second instance can open its transactions.
    return Repositories.build(store, transaction_key=bytes(range(32)))


@pytest.fixture
def concurrently() -> Callable[[int, Callable[[int], object]], list[object]]:
    """`concurrently(n, work)`: run work(0..n-1) in n threads released by a barrier."""
    return run_concurrently
