"""Fixtures for the broker's app tests; the rest are broker_fixtures' (loaded for every
folder by tests/conftest.py: a real slapd, the store on SQLite and PostgreSQL,
`app_factory`, `clock`, `broker_settings`, `session_ended`, `test_rp`).

    def test_x(app_factory, client, password_login): ...

- `app`, `client`: the default app and a test client for it.
- `password_login(client, mail, password="Demo-Password-1", tx=None)`: posts the form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from broker_support import AppFactory, password_login
from flask import Flask
from flask.testing import FlaskClient


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
