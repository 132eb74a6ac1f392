"""A directory that goes away right after it has taken a change from the broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from ldap3 import Connection

from careid_broker.directory import LdapDirectory
from careid_broker.directory.connector import BindAccount, BindRole
from careid_devkit.slapd import Slapd

T = TypeVar("T")


def stop_once_written(directory: Any, slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop `slapd` as soon as it has accepted a change from `directory`'s writer (the AUP
    writer): the change is in the directory, and reading anything back fails. `directory`
    is an `LdapDirectory`, or an app's `SwitchableDirectory` in front of one."""
    adapter: LdapDirectory = getattr(directory, "real", directory)
    connector = adapter._connector  # noqa: SLF001 - the adapter's own transport
    run = connector.run

    def run_then_stop(account: BindAccount, operation: Callable[[Connection], T]) -> T:
        result = run(account, operation)
        if account.role is BindRole.WRITER:
            slapd.stop()
        return result

    monkeypatch.setattr(connector, "run", run_then_stop)
