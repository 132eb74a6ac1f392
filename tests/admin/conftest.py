"""Fixtures for the local administrators' tests.

The broker app fixtures are broker_fixtures' (loaded for every folder by
tests/conftest.py: a real slapd with the demo directory, the store on SQLite and on
PostgreSQL when CAREID_TEST_DATABASE_URL is set, a settable clock, `app_factory`, the
`session_ended` recorder, `test_rp`), so both folders build apps the same way. On top:
`admin_app` (OIDC test clients, API clients, the test sign-in route) and `lee` (a
browser signed in by card as lee.admin, RX1's local administrator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from admin_support import LEE, make_admin_app, sign_in
from broker_support import write_broker_toml
from flask import Flask
from flask.testing import FlaskClient

from careid_devkit.slapd import Slapd


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


@pytest.fixture
def cli_config(
    tmp_path: Path,
    broker_settings: dict[str, dict[str, Any]],
    admin_app: Flask,
    demo_slapd: Slapd,
) -> Path:
    """A broker.toml for the admin app's database and clients, and the demo directory
    (the CLI runs the real `careid-broker`, which reaches a real slapd)."""
    sections = {name: dict(values) for name, values in broker_settings.items()}
    sections["directory"] = demo_slapd.directory_settings()
    sections["oidc"] = {"clients_file": str(tmp_path / "admin-test-clients.toml")}
    sections.pop("signin", None)
    return write_broker_toml(tmp_path / "broker.toml", sections)
