"""Fixtures for card sign-in and registration (imported by tests/card and
tests/registration conftest files).

Real parts: OpenLDAP slapd with the demo directory, the development PKI with the
devkit's OCSP/CRL server on 127.0.0.1, the store on SQLite (and PostgreSQL where
CAREID_TEST_DATABASE_URL is set, for tests that ask for it), the broker app built by
`create_app`. The app's clock is shared with the OCSP server and reset before each test.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import TEST_SECRET_KEY, FakeClock, services
from card_support import (
    ALEX,
    CHRIS,
    ISSUER,
    JO,
    KIM,
    LEE,
    PAT,
    SAM,
    UNKNOWN_UUID,
    CardBrowser,
    CardPki,
)
from cryptography import x509
from flask import Flask
from oidc_support import TestRelyingParty, write_test_clients
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import URL, make_url

from careid_broker.app import create_app
from careid_broker.config import BrokerConfig
from careid_broker.store import EndedSession, upgrade
from careid_broker.store.base import Base
from careid_devkit.ocsp_responder import start_pki_server
from careid_devkit.pki import init_pki
from careid_devkit.slapd import DEBIAN_SBIN, Slapd, start_slapd

PG_ENV = "CAREID_TEST_DATABASE_URL"
CardAppFactory = Callable[..., Flask]


@pytest.fixture(scope="session")
def card_clock() -> FakeClock:
    """The clock of the apps and the OCSP server (reset to the real time per test)."""
    return FakeClock()


@pytest.fixture(autouse=True)
def _reset_card_clock(card_clock: FakeClock) -> None:
    card_clock.now = datetime.now(UTC)


@pytest.fixture(scope="session")
def card_pki(tmp_path_factory: pytest.TempPathFactory, card_clock: FakeClock) -> Iterator[CardPki]:
    """The trusted PKI, served on 127.0.0.1, and a card for each demo person and case."""
    work = tmp_path_factory.mktemp("card-pki")
    now = datetime.now(UTC)
    # Certificates carry the server's URL, known once it listens: start it on a first
    # PKI, then remake the PKI with that base URL (the server rereads the folder).
    init_pki(work / "pki", now=now - timedelta(days=1))
    with start_pki_server(work / "pki", "127.0.0.1", 0, clock=card_clock) as server:
        pki = init_pki(work / "pki", base_url=server.url, now=now - timedelta(days=1), force=True)
        untrusted = init_pki(work / "untrusted", base_url=server.url, now=now - timedelta(days=1))
        env = CardPki(pki=pki, server=server, untrusted=untrusted)
        for name, (_, uuid, holder) in {
            "alex": ALEX,
            "sam": SAM,
            "jo": JO,
            "lee": LEE,
            "kim": KIM,
            "pat": PAT,
            "chris": CHRIS,
        }.items():
            env.issue(name, uuid, holder)
        env.issue("unknown", UNKNOWN_UUID, "Nobody Known")
        env.issue("alex_renewed", ALEX[1], ALEX[2])
        env.issue("alex_rsa", ALEX[1], ALEX[2], algorithm="rsa2048")
        env.issue("alex_p384", ALEX[1], ALEX[2], algorithm="p384")
        revoked = env.issue("alex_revoked", ALEX[1], ALEX[2])
        serial = x509.load_pem_x509_certificate(revoked.certificate_pem.encode()).serial_number
        pki.revoke(uuid=ALEX[1], serial=serial, reason="keyCompromise", now=now)
        env.issue(
            "alex_expired",
            ALEX[1],
            ALEX[2],
            not_before=now - timedelta(days=30),
            not_after=now - timedelta(days=1),
        )
        env.cards["alex_untrusted"] = untrusted.issue_card(
            uuid=ALEX[1], name=ALEX[2], algorithm="p256", pin="123456"
        )
        yield env


def _have_slapd() -> bool:
    return os.access(DEBIAN_SBIN / "slapd", os.X_OK) and os.access(DEBIAN_SBIN / "slapadd", os.X_OK)


@pytest.fixture(scope="session")
def card_slapd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], Slapd]]:
    if not _have_slapd():
        pytest.skip("needs OpenLDAP slapd (Debian package slapd)")
    started: list[Slapd] = []

    def start() -> Slapd:
        instance = start_slapd(tmp_path_factory.mktemp("card-slapd"))
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def card_slapd(card_slapd_factory: Callable[[], Slapd]) -> Slapd:
    """The shared demo directory: tests must not stop or change it."""
    return card_slapd_factory()


@pytest.fixture
def own_card_slapd(card_slapd_factory: Callable[[], Slapd]) -> Slapd:
    """A private demo directory this test may stop or write to."""
    return card_slapd_factory()


@pytest.fixture(scope="session")
def card_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("card-db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def card_pg_database() -> Iterator[URL]:
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"needs PostgreSQL: set {PG_ENV}=postgresql+psycopg://user@host/db")
    server = make_url(raw)
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"careid_card_{secrets.token_hex(6)}"
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


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite by default; `@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)`
    runs a test on PostgreSQL as well."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        path = tmp_path / "broker.db"
        shutil.copyfile(request.getfixturevalue("card_sqlite_template"), path)
        return f"sqlite:///{path}"
    url: URL = request.getfixturevalue("card_pg_database")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))
    finally:
        engine.dispose()
    return url.render_as_string(hide_password=False)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def session_ended() -> list[EndedSession]:
    return []


@pytest.fixture
def card_app_factory(
    card_slapd: Slapd,
    card_pki: CardPki,
    store_url: str,
    card_clock: FakeClock,
    tmp_path: Path,
    session_ended: list[EndedSession],
) -> Iterator[CardAppFactory]:
    """`factory(backchannel_uri=None, directory_slapd=None, **sections)` → a broker app.

    Sections are merged over the defaults: development mode, no background workers,
    the demo directory, the OIDC test clients, `[pki]` trusting `card_pki`, `[card]`.
    """
    built: list[Flask] = []

    def build(
        *,
        backchannel_uri: str | None = None,
        directory_slapd: Slapd | None = None,
        **overrides: dict[str, Any],
    ) -> Flask:
        clients = write_test_clients(
            tmp_path / f"clients-{len(built)}.toml", backchannel_uri=backchannel_uri
        )
        directory = directory_slapd or card_slapd
        settings: dict[str, dict[str, Any]] = {
            "broker": {
                "issuer": ISSUER,
                "secret_key": TEST_SECRET_KEY,
                "dev": True,
                "dev_disable_workers": True,
            },
            "database": {"url": store_url},
            "directory": directory.directory_settings(connect_timeout=1.0, receive_timeout=1.0),
            "oidc": {"clients_file": str(clients)},
            "pki": card_pki.pki_settings(),
            "card": {},
        }
        for section, values in overrides.items():
            if section == "pki" and values is None:
                settings.pop("pki")
                continue
            settings.setdefault(section, {}).update(values)
        config = BrokerConfig.from_mapping(settings, base_dir=tmp_path, env={})
        app = create_app(config, clock=card_clock)
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
        card = app.extensions.get("careid.card")
        if card is not None and card.validator is not None:
            card.validator.stop()
        services(app).store.dispose()


@pytest.fixture
def card_app(card_app_factory: CardAppFactory) -> Flask:
    return card_app_factory()


@pytest.fixture
def browser(card_app: Flask) -> CardBrowser:
    return CardBrowser(card_app.test_client())


@pytest.fixture
def test_rp() -> Iterator[TestRelyingParty]:
    rp = TestRelyingParty()
    with rp.running():
        yield rp
