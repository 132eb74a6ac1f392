"""Fixtures for the local administrators' tests.

The broker app fixtures are tests/broker's own (a real slapd with the demo directory,
the store on SQLite and on PostgreSQL when CAREID_TEST_DATABASE_URL is set, a settable
clock, `app_factory`, the `session_ended` recorder), loaded from its conftest so both
folders build apps the same way. On top: `admin_app` (OIDC test clients, API clients,
the test sign-in route), `lee` (a browser signed in by card as lee.admin, RX1's local
administrator) and `test_rp` (a relying party receiving back-channel logouts).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from admin_support import BROKER_TESTS, LEE, make_admin_app, sign_in
from flask import Flask
from flask.testing import FlaskClient
from oidc_support import TestRelyingParty


def _broker_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "careid_tests_broker_fixtures", BROKER_TESTS / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_broker = _broker_conftest()
slapd_factory = _broker.slapd_factory
demo_slapd = _broker.demo_slapd
own_slapd = _broker.own_slapd
sqlite_template = _broker.sqlite_template
pg_database = _broker.pg_database
store_url = _broker.store_url
clock = _broker.clock
clients_file = _broker.clients_file
broker_settings = _broker.broker_settings
session_ended = _broker.session_ended
app_factory = _broker.app_factory


@pytest.fixture
def test_rp() -> Iterator[TestRelyingParty]:
    rp = TestRelyingParty()
    with rp.running():
        yield rp


@pytest.fixture
def admin_app(app_factory: object, tmp_path: Path, request: pytest.FixtureRequest) -> Flask:
    """The app; its test relying party ("rp") has a back-channel URI when the test asks
    for `test_rp` (a server is started only then: stopping one costs half a second)."""
    backchannel = None
    if "test_rp" in request.fixturenames:
        backchannel = request.getfixturevalue("test_rp").url
    return make_admin_app(app_factory, tmp_path, backchannel_uri=backchannel)


@pytest.fixture
def lee(admin_app: Flask) -> FlaskClient:
    """A browser signed in with lee.admin's smartcard."""
    browser = admin_app.test_client()
    sign_in(browser, LEE)
    return browser
