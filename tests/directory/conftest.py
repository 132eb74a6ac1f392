"""Fixtures for the directory tests: real OpenLDAP slapd instances with the demo seed.

One session-wide slapd serves every test that only reads; tests that stop, pause, lock
or write to a directory start their own (about 0.1 s each) so they cannot disturb it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from directory_support import make_directory

from careid_broker.directory import LdapDirectory
from careid_devkit.slapd import DEBIAN_SBIN, Slapd, start_slapd


def _have_slapd() -> bool:
    return os.access(DEBIAN_SBIN / "slapd", os.X_OK) and os.access(DEBIAN_SBIN / "slapadd", os.X_OK)


@pytest.fixture(scope="session")
def slapd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Slapd]]:
    """Start throwaway slapd instances; all are stopped at the end of the session."""
    if not _have_slapd():
        pytest.skip("needs OpenLDAP slapd (Debian package slapd)")
    started: list[Slapd] = []

    def start(**kwargs: object) -> Slapd:
        instance = start_slapd(tmp_path_factory.mktemp("slapd"), **kwargs)  # type: ignore[arg-type]
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def demo_slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    """The shared, read-only-by-convention directory with the demo seed."""
    return slapd_factory()


@pytest.fixture(scope="session")
def directory(demo_slapd: Slapd) -> LdapDirectory:
    """An adapter on the shared demo directory."""
    return make_directory(demo_slapd)


@pytest.fixture
def own_slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    """A private demo directory this test may stop, pause, lock or write to."""
    return slapd_factory()


@pytest.fixture
def config_dir() -> Path:
    """The repository's config/ldap folder."""
    return Path(__file__).resolve().parents[2] / "config" / "ldap"
