"""Fixtures for the directory tests: real OpenLDAP slapd instances with the demo seed.

The instances are broker_fixtures' (loaded for every folder by tests/conftest.py): one
session-wide `demo_slapd` serves every test that only reads; tests that stop, pause, lock
or write to a directory start their own (`own_slapd`, or `slapd_factory(**options)` for
other `start_slapd` options; about 0.1 s each) so they cannot disturb it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from directory_support import make_directory

from careid_broker.directory import LdapDirectory
from careid_devkit.slapd import Slapd


@pytest.fixture(scope="session")
def directory(demo_slapd: Slapd) -> LdapDirectory:
    """An adapter on the shared demo directory."""
    return make_directory(demo_slapd)


@pytest.fixture
def config_dir() -> Path:
    """The repository's config/ldap folder."""
    return Path(__file__).resolve().parents[2] / "config" / "ldap"
