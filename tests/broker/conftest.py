"""Fixtures for the broker's app tests: a real slapd, the store on SQLite (and PostgreSQL
when CAREID_TEST_DATABASE_URL is set), the app built by `create_app`, a test client.

    def test_x(app_factory, client, password_login): ...

- `demo_slapd` (session): OpenLDAP with config/ldap/demo.ldif; `own_slapd`: a private
  one a test may stop, lock or write to.
- `store_url`: an empty, migrated database per test, on each backend.
- `clock`: a settable clock (the app's, the store's and the directory's).
- `broker_settings`: the settings mapping `app_factory` starts from.
- `app_factory(directory_slapd=None, **section_overrides)`: builds an app; overrides are
  merged per section, e.g. `app_factory(signin={"account_free_failures": 2})`.
- `app`, `client`: the default app and a test client for it.
- `password_login(client, mail, password="Demo-Password-1", tx=None)`: posts the form.
- `session_ended`: every EndedSession the apps reported to the back-channel hook (which
  still runs: the recorder wraps it).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import (
    FALLBACK_CLIENTS,
    REPO,
    TEST_SECRET_KEY,
    AppFactory,
    FakeClock,
    password_login,
    services,
)
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import URL, make_url

from careid_broker.app import create_app
from careid_broker.config import BrokerConfig
from careid_broker.store import EndedSession, upgrade
from careid_broker.store.base import Base
from careid_devkit.slapd import DEBIAN_SBIN, Slapd, start_slapd

PG_ENV = "CAREID_TEST_DATABASE_URL"


def _have_slapd() -> bool:
    return os.access(DEBIAN_SBIN / "slapd", os.X_OK) and os.access(DEBIAN_SBIN / "slapadd", os.X_OK)


@pytest.fixture(scope="session")
def slapd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Slapd]]:
    """Start throwaway demo directories; every one is stopped at the end of the session."""
    if not _have_slapd():
        pytest.skip("needs OpenLDAP slapd (Debian package slapd)")
    started: list[Slapd] = []

    def start() -> Slapd:
        instance = start_slapd(tmp_path_factory.mktemp("slapd"))
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def demo_slapd(slapd_factory: Callable[[], Slapd]) -> Slapd:
    """The shared demo directory: tests must not lock, stop or change it."""
    return slapd_factory()


@pytest.fixture
def own_slapd(slapd_factory: Callable[[], Slapd]) -> Slapd:
    """A private demo directory this test may stop, lock or write to."""
    return slapd_factory()


# The store.


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file (`careid-broker db upgrade`), copied for each test."""
    path = tmp_path_factory.mktemp("broker-db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """A fresh, migrated PostgreSQL database for the session (skip when not configured)."""
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"needs PostgreSQL: set {PG_ENV}=postgresql+psycopg://user@host/db")
    server = make_url(raw)
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"careid_broker_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "broker.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: URL = request.getfixturevalue("pg_database")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))
    finally:
        engine.dispose()
    return url.render_as_string(hide_password=False)


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
def broker_settings(
    demo_slapd: Slapd, store_url: str, clients_file: Path
) -> dict[str, dict[str, Any]]:
    """The settings (as parsed TOML) the test app starts from: development mode."""
    return {
        "broker": {
            "issuer": "http://localhost:5000",
            "secret_key": TEST_SECRET_KEY,
            "dev": True,
            "dev_disable_workers": True,
        },
        "database": {"url": store_url},
        "directory": demo_slapd.directory_settings(connect_timeout=1.0, receive_timeout=1.0),
        "signin": {},
        "oidc": {"clients_file": str(clients_file)},
    }


@pytest.fixture
def session_ended() -> list[EndedSession]:
    return []


@pytest.fixture
def app_factory(
    broker_settings: dict[str, dict[str, Any]],
    clock: FakeClock,
    tmp_path: Path,
    session_ended: list[EndedSession],
) -> Iterator[AppFactory]:
    """Build apps from `broker_settings` with per-section overrides; disposed afterwards."""
    built: list[Flask] = []

    def build(
        *,
        directory_slapd: Slapd | None = None,
        env: dict[str, str] | None = None,
        **overrides: dict[str, Any],
    ) -> Flask:
        settings = {section: dict(values) for section, values in broker_settings.items()}
        if directory_slapd is not None:
            settings["directory"] = directory_slapd.directory_settings(
                connect_timeout=1.0, receive_timeout=1.0
            )
        for section, values in overrides.items():
            settings.setdefault(section, {}).update(values)
        config = BrokerConfig.from_mapping(settings, base_dir=tmp_path, env=env or {})
        app = create_app(config, clock=clock)
        app.config["TESTING"] = True
        svc = services(app)
        real_hook = svc.session_ended

        def record(ended: EndedSession) -> None:
            session_ended.append(ended)
            real_hook(ended)

        svc.session_ended = record
        built.append(app)
        return app

    yield build
    for app in built:
        services(app).store.dispose()


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(name="password_login")
def password_login_fixture() -> Callable[..., Any]:
    """`password_login(client, mail, password=..., tx=None)` (see broker_support)."""
    return password_login
