"""Helpers shared by the directory tests (imported as a plain module: tests have no package)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from ldap3 import Connection

from careid_broker.directory import DirectoryConfig, LdapDirectory
from careid_devkit.slapd import Slapd

# The tests' "now": after every seeded AUP acceptance, before kim.taylor's 2099 expiry.
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make_directory(slapd: Slapd, **overrides: object) -> LdapDirectory:
    """An adapter for that slapd, with short timeouts and the fixed test clock."""
    settings: dict[str, object] = {"connect_timeout": 1.0, "receive_timeout": 1.0}
    settings.update(overrides)
    config = DirectoryConfig.from_mapping(slapd.directory_settings(**settings))
    return LdapDirectory(config, clock=lambda: NOW)


@contextmanager
def bound_connection(url: str, dn: str, password: str) -> Iterator[Connection]:
    """A plain ldap3 connection bound as `dn`, always unbound afterwards.

    (ldap3's own `with connection:` leaves a connection bound before the block open.)
    """
    connection = Connection(url, user=dn, password=password, auto_bind=True)
    try:
        yield connection
    finally:
        connection.unbind()
