"""Directory entries changed in a real slapd as a directory administrator would: an
address given to a new entry (another person), an entry renamed."""

from __future__ import annotations

from typing import Any

from ldap3 import BASE, Connection

from careid_devkit.slapd import Slapd

PEOPLE = "ou=people,dc=nhs,dc=example"


def _admin(slapd: Slapd) -> Connection:
    return Connection(slapd.url, slapd.root_dn, slapd.root_password, auto_bind=True)


def modify_entry(slapd: Slapd, dn: str, changes: dict[str, Any]) -> None:
    """Change an entry as the directory's administrator (ldap3's `modify` changes)."""
    admin = _admin(slapd)
    try:
        assert admin.modify(dn, changes), admin.result
    finally:
        admin.unbind()


def give_address_to_new_entry(
    slapd: Slapd,
    uid: str,
    new_uid: str,
    *,
    care_identity: str | None = None,
    org_code: str | None = None,
) -> str:
    """Delete `uid`'s entry and add another person's, `new_uid`, holding its mail
    address (and its other account values, but no Care Identity unless given, and the
    organisation given if any); the new entry's DN. slapd gives the new entry its own
    entryUUID, as any directory would."""
    old_dn, new_dn = f"uid={uid},{PEOPLE}", f"uid={new_uid},{PEOPLE}"
    admin = _admin(slapd)
    try:
        assert admin.search(old_dn, "(objectClass=*)", BASE, attributes=["*"]), admin.result
        values = {
            name: list(raw)
            for name, raw in admin.response[0]["raw_attributes"].items()
            if name.casefold() != "careidcareidentityuuid"
        }
        values["uid"] = [new_uid.encode()]
        values["cn"] = values["displayName"] = [b"New Starter"]
        if care_identity is not None:
            values["careidCareIdentityUuid"] = [care_identity.encode()]
        if org_code is not None:
            values["careidOrgCode"] = [org_code.encode()]
        assert admin.delete(old_dn), admin.result
        assert admin.add(new_dn, attributes=values), admin.result
    finally:
        admin.unbind()
    return new_dn


def rename_entry(slapd: Slapd, uid: str, new_uid: str) -> str:
    """Rename `uid`'s entry (the same entry, same entryUUID, a new DN); its new DN."""
    admin = _admin(slapd)
    try:
        assert admin.modify_dn(f"uid={uid},{PEOPLE}", f"uid={new_uid}"), admin.result
    finally:
        admin.unbind()
    return f"uid={new_uid},{PEOPLE}"
