"""Store fixtures: every test runs on SQLite and, when configured, on PostgreSQL.

PostgreSQL runs when CAREID_TEST_DATABASE_URL names a server we may create databases
on (CI sets it; locally: postgresql+psycopg://postgres@127.0.0.1:5432/test). A fresh
database is created for the test session and dropped afterwards (the named database is
never written to); tests are isolated by truncating every table before each test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete
from sqlalchemy.engine import URL, make_url
from store_helpers import FakeClock, fresh_pg_database, run_concurrently

from careid_broker.store import Repositories, Store, create_store
from careid_broker.store.base import Base

PG_ENV = "CAREID_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def pg_server() -> URL:
    """The PostgreSQL server named by CAREID_TEST_DATABASE_URL (skip when unset)."""
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"needs PostgreSQL: set {PG_ENV}=postgresql+psycopg://user@host/db")
    url = make_url(raw)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


@pytest.fixture(scope="session")
def pg_database(pg_server: URL) -> Iterator[URL]:
    """A fresh PostgreSQL database with the schema, for the whole test session."""
    with fresh_pg_database(pg_server, "careid_store") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with the schema, made once and copied for each test (fast)."""
    path = tmp_path_factory.mktemp("store") / "template.db"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_cleaner(pg_database: URL) -> Iterator[Callable[[], None]]:
    """Empties every table of the session's PostgreSQL database."""
    engine = create_engine(pg_database)
    # DELETE, children first: on a handful of rows it is far quicker than TRUNCATE.
    statements = [delete(table) for table in reversed(Base.metadata.sorted_tables)]

    def clean() -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(statement)

    yield clean
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database with the schema, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "broker.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    request.getfixturevalue("pg_cleaner")()
    url: URL = request.getfixturevalue("pg_database")
    return str(url.render_as_string(hide_password=False))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Store]:
    s = create_store(db_url, clock=clock, busy_timeout=timedelta(seconds=20))
    yield s
    s.dispose()


@pytest.fixture
def other_store(db_url: str, clock: FakeClock) -> Iterator[Store]:
    """A second engine on the same database: a second broker instance."""
    s = create_store(db_url, clock=clock, busy_timeout=timedelta(seconds=20))
    yield s
    s.dispose()


@pytest.fixture
def repos(store: Store) -> Repositories:
    return Repositories.build(store)


@pytest.fixture
def concurrently() -> Callable[[int, Callable[[int], object]], list[object]]:
    """`concurrently(n, work)`: run work(0..n-1) in n threads released by a barrier."""
    return run_concurrently
