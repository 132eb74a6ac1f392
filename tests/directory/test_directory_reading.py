"""Entries to accounts and Care Identities through the default and the AD mapping."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from careid_broker.directory import AttributeMapping, Role
from careid_broker.directory.connector import Entry, decode_entry
from careid_broker.directory.reading import read_account, read_care_identity

AD_MAPPING_FILE = Path(__file__).resolve().parents[2] / "config" / "ldap" / "active-directory.toml"


@pytest.fixture(scope="module")
def ad() -> AttributeMapping:
    return AttributeMapping.from_mapping(tomllib.loads(AD_MAPPING_FILE.read_text()))


def _entry(dn: str, attributes: dict[str, list[str]]) -> Entry:
    """As ldap3 hands it over: raw bytes, names spelt as the server likes."""
    raw = {name: [value.encode() for value in values] for name, values in attributes.items()}
    return decode_entry({"dn": dn, "raw_attributes": raw, "type": "searchResEntry"})


AD_USER = {
    "mail": ["alex.morgan@nhs.net"],
    "displayName": ["Morgan, Alex (RX1)"],
    "givenName": ["Alex"],
    "sn": ["Morgan"],
    "UserAccountControl": ["512"],  # AD spells names its own way; matching ignores case
    "accountExpires": ["9223372036854775807"],
    "extensionAttribute1": ["555000000001"],
    "extensionAttribute2": ["RX1"],
    "extensionAttribute3": ["RX1, RX2"],
    "extensionAttribute4": ["2024-1"],
    "extensionAttribute5": ["20240301093000.0Z"],
    "extensionAttribute6": ["R8000|Clinical Practitioner|RX1;R8001|Nurse|RX2"],
    "extensionAttribute7": ["active"],
}
DN = "CN=Alex Morgan,OU=Staff,DC=trust,DC=example"


def test_ad_account(ad: AttributeMapping) -> None:
    account = read_account(_entry(DN, AD_USER), ad.accounts)
    assert account.problems == ()
    assert account.dn == DN
    assert account.mail == "alex.morgan@nhs.net"
    assert account.display_name == "Morgan, Alex (RX1)"
    assert account.active is True
    assert account.expires is None
    assert account.org_code == "RX1"
    assert account.admin_org_codes == ("RX1", "RX2")
    assert account.aup_version == "2024-1"
    assert account.aup_accepted_at == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert account.care_identity_uuid == "555000000001"
    assert account.entry_id is None  # objectGUID not in this entry


def test_ad_object_guids_are_read_as_hex_so_no_two_read_the_same(ad: AttributeMapping) -> None:
    # 16 bytes, most not UTF-8: decoded as text, these two would both read as U+FFFD runs.
    guids = (bytes.fromhex("80" * 16), bytes.fromhex("ff" * 16))
    raw: dict[str, list[bytes]] = {n: [v.encode() for v in vs] for n, vs in AD_USER.items()}
    read = []
    for guid in guids:
        item = {"dn": DN, "raw_attributes": {**raw, "objectGUID": [guid]}}
        entry = decode_entry(item, ad.accounts.binary_attributes())
        read.append(read_account(entry, ad.accounts).entry_id)
    assert read == ["80" * 16, "ff" * 16]
    assert "objectGUID" in ad.accounts.attributes()


def test_an_entry_id_too_long_to_keep_is_a_problem(ad: AttributeMapping) -> None:
    raw = {n: [v.encode() for v in vs] for n, vs in AD_USER.items()}
    item = {"dn": DN, "raw_attributes": {**raw, "objectGUID": [b"x" * 65]}}
    account = read_account(decode_entry(item, ad.accounts.binary_attributes()), ad.accounts)
    assert account.entry_id is None
    assert account.problems == ("objectGUID is longer than 128 characters",)


@pytest.mark.parametrize(
    ("changes", "active", "expires"),
    [
        ({"UserAccountControl": ["514"]}, False, None),
        ({"accountExpires": ["0"]}, True, None),
        ({"accountExpires": ["133537590000000000"]}, True, datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_ad_status_and_expiry(
    ad: AttributeMapping, changes: dict[str, list[str]], active: bool, expires: datetime | None
) -> None:
    account = read_account(_entry(DN, {**AD_USER, **changes}), ad.accounts)
    assert (account.active, account.expires, account.problems) == (active, expires, ())


def test_unreadable_values_become_problems_not_crashes(ad: AttributeMapping) -> None:
    broken = {**AD_USER, "accountExpires": ["soon"], "UserAccountControl": ["n/a"]}
    account = read_account(_entry(DN, broken), ad.accounts)
    assert account.active is False
    assert account.expires is None
    assert len(account.problems) == 2
    assert any("accountExpires" in p for p in account.problems)


@pytest.mark.parametrize("value", ["00010101000000+0100", "99991231235959-0100"])
def test_a_time_no_calendar_holds_is_a_problem_not_a_crash(value: str) -> None:
    # OpenLDAP accepts the first; either, read as UTC, falls outside years 1 to 9999.
    entry = _entry(
        "uid=x",
        {
            "mail": ["x@nhs.net"],
            "careidAccountStatus": ["active"],
            "careidAccountExpires": [value],
            "careidAupAcceptedTime": [value],
        },
    )
    account = read_account(entry, AttributeMapping().accounts)
    assert account.expires is None and account.aup_accepted_at is None
    assert len(account.problems) == 2
    assert account.problems[0].startswith("careidAccountExpires: ")
    assert account.problems[1].startswith("careidAupAcceptedTime: ")


def test_an_ad_expiry_wider_than_a_filetime_is_a_problem_not_never(ad: AttributeMapping) -> None:
    broken = {**AD_USER, "accountExpires": ["9223372036854775808"]}
    account = read_account(_entry(DN, broken), ad.accounts)
    assert account.expires is None
    assert len(account.problems) == 1 and "accountExpires" in account.problems[0]


def test_ad_care_identity(ad: AttributeMapping) -> None:
    identity = read_care_identity(_entry(DN, AD_USER), ad.care_identities)
    assert identity.uuid == "555000000001"
    assert identity.active is True
    assert identity.roles == (
        Role(code="R8000", name="Clinical Practitioner", org_code="RX1"),
        Role(code="R8001", name="Nurse", org_code="RX2"),
    )
    suspended = read_care_identity(
        _entry(DN, {**AD_USER, "extensionAttribute7": ["suspended"]}), ad.care_identities
    )
    assert suspended.active is False and suspended.problems == ()


def test_default_mapping_fallbacks_and_bad_roles() -> None:
    mapping = AttributeMapping()
    account = read_account(
        _entry("uid=x", {"mail": ["x@nhs.net"], "careidAccountStatus": ["active"]}),
        mapping.accounts,
    )
    assert account.display_name == "x@nhs.net"
    assert account.active and account.problems == ()
    assert account.admin_org_codes == ()

    identity = read_care_identity(
        _entry(
            "careidUuid=1",
            {
                "careidUuid": ["1"],
                "careidStatus": ["active"],
                "careidRole": ["R1|Nurse|RX1", "junk"],
            },
        ),
        mapping.care_identities,
    )
    assert identity.roles == (Role(code="R1", name="Nurse", org_code="RX1"),)
    assert identity.active and len(identity.problems) == 1


def test_a_record_without_a_uuid_is_not_active() -> None:
    identity = read_care_identity(
        _entry("cn=x", {"careidStatus": ["active"]}), AttributeMapping().care_identities
    )
    assert identity.active is False and identity.problems
