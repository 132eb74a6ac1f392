"""A relying party's `sub` follows the directory entry, not only its mail address.

OIDC Core §2: a `sub` is "never reassigned". An address given to a new person (a new
directory entry, so a new `entryUUID`) gets a new `sub`; the same entry renamed or
moved keeps its `sub`. Against a real slapd, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of
from flask import Flask
from ldap3 import ALL_ATTRIBUTES, Connection
from oidc_support import ALEX, Browser, id_token_claims, make_oidc_app

from careid_broker.store import AuditRecord
from careid_devkit.slapd import Slapd

ALEX_DN = "uid=alex.morgan,ou=people,dc=nhs,dc=example"


@pytest.fixture
def admin(own_slapd: Slapd) -> Iterator[Connection]:
    """The directory's administrator, to move, delete and add entries."""
    connection = Connection(
        own_slapd.url, own_slapd.root_dn, own_slapd.root_password, auto_bind=True
    )
    yield connection
    connection.unbind()


@pytest.fixture
def app(app_factory: Callable[..., Flask], tmp_path: Path, own_slapd: Slapd) -> Flask:
    return make_oidc_app(app_factory, tmp_path, directory_slapd=own_slapd)


def _signed_in_sub(app: Flask) -> tuple[str, str]:
    """(the ID token's `sub`, userinfo's `sub`) for a fresh browser signing in as Alex."""
    browser = Browser(app.test_client())
    tokens = browser.redeem(browser.signed_in_code(ALEX)).get_json()
    _, claims = id_token_claims(browser.client, tokens["id_token"])
    info = browser.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).get_json()
    return claims["sub"], info["sub"]


def _entry(admin: Connection, dn: str) -> dict[str, Any]:
    assert admin.search(dn, "(objectClass=*)", search_scope="BASE", attributes=ALL_ATTRIBUTES)
    return {
        name: list(values) for name, values in admin.entries[0].entry_attributes_as_dict.items()
    }


def _audits(app: Flask, event: str) -> list[AuditRecord]:
    return list(broker_of(app).repos.audit.list_recent(event_prefix=event, limit=100))


def test_an_address_given_to_a_new_entry_gets_a_new_sub(app: Flask, admin: Connection) -> None:
    first, first_info = _signed_in_sub(app)
    assert first == first_info
    # Alex leaves; the address goes to a new person, a new entry under another name.
    attributes = _entry(admin, ALEX_DN)
    assert admin.delete(ALEX_DN)
    attributes["uid"] = ["alex.morgan2"]
    assert admin.add("uid=alex.morgan2,ou=people,dc=nhs,dc=example", attributes=attributes)

    second, second_info = _signed_in_sub(app)
    assert second == second_info and second != first
    # The new holder keeps the new `sub` from now on.
    assert _signed_in_sub(app)[0] == second
    [reassigned] = _audits(app, "subject.reassigned")
    assert reassigned.subject == ALEX and reassigned.details["previous_sub"] == first


def test_a_renamed_or_moved_entry_keeps_its_sub(app: Flask, admin: Connection) -> None:
    first, _ = _signed_in_sub(app)
    assert admin.modify_dn(ALEX_DN, "uid=alex.morgan-renamed")
    assert _signed_in_sub(app)[0] == first
    moved = "ou=moved,ou=people,dc=nhs,dc=example"
    assert admin.add(moved, "organizationalUnit", {"ou": "moved"})
    assert admin.modify_dn(
        "uid=alex.morgan-renamed,ou=people,dc=nhs,dc=example",
        "uid=alex.morgan-renamed",
        new_superior=moved,
    )
    assert _signed_in_sub(app)[0] == first
    assert _audits(app, "subject.reassigned") == []
