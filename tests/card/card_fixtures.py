"""Card sign-in's fixtures, for every test folder (a pytest plugin: tests/conftest.py
loads it; tests/card and tests/registration use them).

Parts: the in-memory demo directory (a real slapd where a test passes `own_slapd`), the
development PKI with the devkit's OCSP/CRL server on 127.0.0.1, the
store on SQLite (and PostgreSQL where CAREID_TEST_DATABASE_URL is set, for tests that ask
for it), the broker app built by `create_app`.

The app's clock is shared with the OCSP server for the whole session. A test reaches
either only through `card_clock` or `card_pki`, which set it back to the real time
first, so what one test does to the clock never leaks into the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_fixtures import MEMORY_DIRECTORY_SETTINGS, AppBuilder, empty_store_url
from broker_support import TEST_SECRET_KEY
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
from oidc_support import write_test_clients

from careid_devkit.ocsp_responder import start_pki_server
from careid_devkit.pki import init_pki
from careid_devkit.slapd import Slapd
from support.clock import FakeClock

CardAppFactory = Callable[..., Flask]


@pytest.fixture(scope="session")
def _card_session_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def card_clock(_card_session_clock: FakeClock) -> FakeClock:
    """The clock of the apps and the OCSP server, set to the real time for this test."""
    _card_session_clock.now = datetime.now(UTC)
    return _card_session_clock


@pytest.fixture(scope="session")
def _card_session_pki(
    tmp_path_factory: pytest.TempPathFactory, _card_session_clock: FakeClock
) -> Iterator[CardPki]:
    work = tmp_path_factory.mktemp("card-pki")
    now = datetime.now(UTC)
    # Certificates carry the server's URL, known once it listens: start it on a first
    # PKI, then remake the PKI with that base URL (the server rereads the folder).
    init_pki(work / "pki", now=now - timedelta(days=1))
    with start_pki_server(work / "pki", "127.0.0.1", 0, clock=_card_session_clock) as server:
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


@pytest.fixture
def card_pki(_card_session_pki: CardPki, card_clock: FakeClock) -> CardPki:
    """The trusted PKI, served on 127.0.0.1 (its OCSP answers use `card_clock`), and a
    card for each demo person and case."""
    return _card_session_pki


@pytest.fixture
def card_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The card app's empty, migrated database: SQLite, unless the test asks for both
    backends with `@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)`."""
    return empty_store_url(request, tmp_path, getattr(request, "param", "sqlite"))


@pytest.fixture
def card_app_factory(
    card_pki: CardPki,
    card_store_url: str,
    card_clock: FakeClock,
    tmp_path: Path,
    app_builder: AppBuilder,
) -> CardAppFactory:
    """`factory(backchannel_uri=None, other_backchannel=None, other_card_removal=None,
    directory_slapd=None, **sections)` → a broker app.

    Sections are merged over the defaults: development mode, no background workers, the
    in-memory demo directory (`directory_slapd=` for a real slapd), the OIDC test
    clients, `[pki]` trusting `card_pki` (`pki=None`: none), `[card]`.
    """

    def build(
        *,
        backchannel_uri: str | None = None,
        other_backchannel: str | None = None,
        other_card_removal: str | None = None,
        directory_slapd: Slapd | None = None,
        **overrides: dict[str, Any],
    ) -> Flask:
        clients = write_test_clients(
            tmp_path / f"clients-{len(app_builder.built)}.toml",
            backchannel_uri=backchannel_uri,
            other_backchannel=other_backchannel,
            other_card_removal=other_card_removal,
        )
        settings: dict[str, dict[str, Any]] = {
            "broker": {
                "issuer": ISSUER,
                "secret_key": TEST_SECRET_KEY,
                "dev": True,
                "dev_disable_workers": True,
            },
            "database": {"url": card_store_url},
            "directory": (
                directory_slapd.directory_settings(connect_timeout=1.0, receive_timeout=1.0)
                if directory_slapd is not None
                else dict(MEMORY_DIRECTORY_SETTINGS)
            ),
            "oidc": {"clients_file": str(clients)},
            "pki": card_pki.pki_settings(),
            "card": {},
        }
        return app_builder.build(
            settings, overrides, clock=card_clock, ldap=directory_slapd is not None
        )

    return build


@pytest.fixture
def card_app(card_app_factory: CardAppFactory) -> Flask:
    return card_app_factory()


@pytest.fixture
def card_browser(card_app: Flask) -> CardBrowser:
    return CardBrowser(card_app.test_client())
