"""What a test slapd's password policy has counted against an entry (read as its root)."""

from __future__ import annotations

import time

from ldap3 import BASE, Connection, Server

from careid_devkit.slapd import Slapd


def failed_binds(slapd: Slapd, dn: str) -> int:
    """How many failed binds the directory holds against `dn` now (ppolicy
    `pwdFailureTime`, one value per failure)."""
    root = Connection(
        Server(slapd.url, connect_timeout=2),
        user=slapd.root_dn,
        password=slapd.root_password,
        receive_timeout=5,
    )
    try:
        assert root.bind(), root.result
        assert root.search(dn, "(objectClass=*)", BASE, attributes=["pwdFailureTime"])
        return len(root.entries[0].entry_attributes_as_dict.get("pwdFailureTime", []))
    finally:
        root.unbind()


def failed_binds_once_at_least(slapd: Slapd, dn: str, count: int, *, patience: float = 10.0) -> int:
    """`failed_binds`, once it has reached `count`, or after `patience` seconds.

    A bind sent to a paused slapd is taken when it resumes, on a thread of its own: how
    soon is not this test's business, only how many it counted once it had.
    """
    deadline = time.monotonic() + patience
    while True:
        seen = failed_binds(slapd, dn)
        if seen >= count or time.monotonic() >= deadline:
            return seen
        time.sleep(0.05)
