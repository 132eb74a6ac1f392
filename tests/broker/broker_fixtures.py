"""The broker's fixtures, for every test folder (a pytest plugin: tests/conftest.py loads it).

One definition each, so a whole run starts one shared demo directory and one PostgreSQL
database however many folders use them (fixtures defined in a folder's conftest would be
started again for each folder).

    def test_x(app_factory, demo_slapd, store_url): ...

- `slapd_factory(**start_slapd_options)` (session): throwaway demo directories, all
  stopped at the end; `demo_slapd` (session): the shared one, which tests must not stop,
  lock or change; `own_slapd`: a private one a test may stop, pause, lock or write to.
- `pg_server` (session): the server named by CAREID_TEST_DATABASE_URL (skip when unset);
  `pg_database` (session): a fresh database there, migrated, dropped at the end;
  `sqlite_template` (session): a migrated SQLite file.
- `store_url`: an empty, migrated database per test, on each backend (`BACKENDS`);
  `empty_store_url(request, tmp_path, backend)` makes one for other fixtures.
- `clock`: a settable clock (the app's, the store's and the directory's).
- `broker_settings`: the settings mapping `app_factory` starts from.
- `app_factory(directory_slapd=None, env=None, **section_overrides)`: builds an app;
  overrides are merged per section, e.g. `app_factory(signin={"account_free_failures": 2})`.
- `session_ended`: every EndedSession the apps published (the recorder subscribes beside
  the OpenID Provider); `app_builder` builds and closes those apps for `app_factory`
  and other factories (card sign-in's).
- `test_rp`: a relying party on 127.0.0.1 receiving back-channel logouts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from broker_support import (
    FALLBACK_CLIENTS,
    REPO,
    TEST_SECRET_KEY,
    AppFactory,
    SwitchableDirectory,
    broker_of,
)
from flask import Flask
from oidc_support import TestRelyingParty
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import URL, make_url

from careid_broker.app import create_app
from careid_broker.config import BrokerConfig
from careid_broker.directory import Directory, LdapDirectory
from careid_broker.directory.memory import MemoryDirectory
from careid_broker.store import EndedSession, upgrade
from careid_broker.store.base import Base
from careid_devkit.slapd import (
    DEBIAN_SBIN,
    DEMO_ACCOUNTS_BASE,
    DEMO_CARE_IDENTITIES_BASE,
    DEMO_SEED,
    DEMO_SERVICE_DN,
    DEMO_SERVICE_PASSWORD,
    Slapd,
    start_slapd,
)
from support.clock import FakeClock

PG_ENV = "CAREID_TEST_DATABASE_URL"
# `@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)` and the like.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# The directory.

#: A `[directory]` section naming the demo directory's bases and service account, for an
#: app whose directory is the in-memory one (`MemoryDirectory`, the demo seed): nothing
#: listens at its URL and nothing connects to it.
MEMORY_DIRECTORY_SETTINGS: dict[str, Any] = {
    "urls": ["ldap://127.0.0.1:9"],
    "bind_dn": DEMO_SERVICE_DN,
    "bind_password": DEMO_SERVICE_PASSWORD,
    "accounts_base": DEMO_ACCOUNTS_BASE,
    "care_identities_base": DEMO_CARE_IDENTITIES_BASE,
    "current_aup_version": "2024-1",
}
_SLAPD_FIXTURES = frozenset({"slapd_factory", "demo_slapd", "own_slapd"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a real slapd `slapd`, so `-m "not slapd"` skips it
    and the in-process tier (on the in-memory directory) starts no external process."""
    for item in items:
        if _SLAPD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slapd)


def _have_slapd() -> bool:
    return os.access(DEBIAN_SBIN / "slapd", os.X_OK) and os.access(DEBIAN_SBIN / "slapadd", os.X_OK)


@pytest.fixture(scope="session")
def slapd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Slapd]]:
    """Start throwaway directories (`start_slapd` options, the demo seed by default);
    every one is stopped at the end of the session."""
    if not _have_slapd():
        pytest.skip("needs OpenLDAP slapd (Debian package slapd)")
    started: list[Slapd] = []

    def start(**options: Any) -> Slapd:
        instance = start_slapd(tmp_path_factory.mktemp("slapd"), **options)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def demo_slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    """The shared demo directory: tests must not lock, stop or change it."""
    return slapd_factory()


@pytest.fixture
def own_slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    """A private demo directory this test may stop, pause, lock or write to."""
    return slapd_factory()


# The store.


@contextmanager
def fresh_pg_database(server: URL, prefix: str) -> Iterator[URL]:
    """Create a uniquely named PostgreSQL database; drop it (forcibly) afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> URL:
    """The PostgreSQL server named by CAREID_TEST_DATABASE_URL (skip when unset); only
    new databases made there are written to, never the one it names."""
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"needs PostgreSQL: set {PG_ENV}=postgresql+psycopg://user@host/db")
    url = make_url(raw)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


@pytest.fixture(scope="session")
def pg_database(pg_server: URL) -> Iterator[URL]:
    """A fresh, migrated PostgreSQL database (`careid-broker db upgrade`) for the session."""
    with fresh_pg_database(pg_server, "careid_broker") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file (`careid-broker db upgrade`), copied for each test."""
    path = tmp_path_factory.mktemp("broker-db") / "template.db"
    upgrade(f"sqlite:///{path}")
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


def empty_store_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    """An empty, migrated database on `backend` ("sqlite" or "postgresql") for this test."""
    if backend == "sqlite":
        path = tmp_path / "broker.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    request.getfixturevalue("pg_cleaner")()
    url: URL = request.getfixturevalue("pg_database")
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database on each backend."""
    return empty_store_url(request, tmp_path, request.param)


# The app.


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    """The repository's demo clients file, or a one-client stand-in until it exists."""
    shipped = REPO / "config" / "clients.toml"
    if shipped.is_file():
        return shipped
    path = tmp_path / "clients.toml"
    path.write_text(FALLBACK_CLIENTS, encoding="utf-8")
    return path


@pytest.fixture
def broker_settings(store_url: str, clients_file: Path) -> dict[str, dict[str, Any]]:
    """The settings (as parsed TOML) the test app starts from: development mode, the
    in-memory demo directory (`app_factory(directory_slapd=…)` for a real slapd)."""
    return {
        "broker": {
            "issuer": "http://localhost:5000",
            "secret_key": TEST_SECRET_KEY,
            "dev": True,
            "dev_disable_workers": True,
        },
        "database": {"url": store_url},
        "directory": dict(MEMORY_DIRECTORY_SETTINGS),
        "signin": {},
        "oidc": {"clients_file": str(clients_file)},
    }


@pytest.fixture
def session_ended() -> list[EndedSession]:
    return []


class AppBuilder:
    """The apps one test builds with `create_app`: each in testing mode, each reporting its
    ended sessions to `ended` as well as to its real back-channel hook; `close()` stops
    what they started (the card validator's worker, the store's engine)."""

    def __init__(self, *, base_dir: Path, ended: list[EndedSession]) -> None:
        self.built: list[Flask] = []
        self._base_dir = base_dir
        self._ended = ended

    def build(
        self,
        settings: Mapping[str, Mapping[str, Any]],
        overrides: Mapping[str, Mapping[str, Any] | None],
        *,
        clock: FakeClock,
        env: Mapping[str, str] | None = None,
        ldap: bool = False,
    ) -> Flask:
        """An app from `settings` with `overrides` merged per section (None drops one)."""
        merged = {section: dict(values) for section, values in settings.items()}
        for section, values in overrides.items():
            if values is None:
                merged.pop(section, None)
            else:
                merged.setdefault(section, {}).update(values)
        config = BrokerConfig.from_mapping(merged, base_dir=self._base_dir, env=dict(env or {}))
        real: Directory = (
            LdapDirectory(config.directory, clock=clock)
            if ldap
            else MemoryDirectory.from_ldif(
                DEMO_SEED,
                clock=clock,
                current_aup_version=config.directory.current_aup_version,
                writable=config.directory.writable,
            )
        )
        app = create_app(config, clock=clock, directory=SwitchableDirectory(real))
        app.config["TESTING"] = True
        broker_of(app).session_events.on_ended(self._ended.append)
        self.built.append(app)
        return app

    def close(self) -> None:
        for app in self.built:
            broker_of(app).stop()


@pytest.fixture
def app_builder(tmp_path: Path, session_ended: list[EndedSession]) -> Iterator[AppBuilder]:
    """Builds the test's apps (`app_factory`, `card_app_factory`); closes them after it."""
    apps = AppBuilder(base_dir=tmp_path, ended=session_ended)
    yield apps
    apps.close()


@pytest.fixture
def app_factory(
    broker_settings: dict[str, dict[str, Any]], clock: FakeClock, app_builder: AppBuilder
) -> AppFactory:
    """Build apps from `broker_settings` with per-section overrides; closed afterwards."""

    def build(
        *,
        directory_slapd: Slapd | None = None,
        env: dict[str, str] | None = None,
        **overrides: dict[str, Any],
    ) -> Flask:
        settings = dict(broker_settings)
        if directory_slapd is not None:
            settings["directory"] = directory_slapd.directory_settings(
                connect_timeout=1.0, receive_timeout=1.0
            )
        return app_builder.build(
            settings, overrides, clock=clock, env=env, ldap=directory_slapd is not None
        )

    return build


@pytest.fixture
def test_rp() -> Iterator[TestRelyingParty]:
    """A relying party on 127.0.0.1 that records the back-channel logouts it receives."""
    with TestRelyingParty().running() as rp:
        yield rp
