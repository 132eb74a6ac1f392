"""Fixtures for the webmail: a stand-in OP over real HTTP, and the webmail app under test.

The OP is a stand-in (webmail_fake_op.py); the end-to-end test with the real broker
lives in tests/e2e.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webmail_fake_op import FakeOP
from webmail_support import BASE_URL, CLIENT_ID, CLIENT_SECRET, make_config

from careid_devkit.webmail import create_webmail_app


@pytest.fixture(scope="session")
def op_server() -> Iterator[FakeOP]:
    op = FakeOP(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=f"{BASE_URL}/callback"
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def op(op_server: FakeOP) -> Iterator[FakeOP]:
    op_server.reset()
    yield op_server
    op_server.reset()


@pytest.fixture
def app(op: FakeOP) -> Flask:
    return create_webmail_app(make_config(op))


@pytest.fixture
def webmail_client(app: Flask) -> FlaskClient:
    """One browser (cookie jar) on the webmail."""
    return app.test_client()
