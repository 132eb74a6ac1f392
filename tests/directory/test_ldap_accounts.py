"""The LDAP adapter against a real slapd with the demo seed: reading, sign-in, searching."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from directory_support import bound_connection, make_directory
from ldap3 import MODIFY_REPLACE

from careid_broker.codes import BrokerCode
from careid_broker.directory import LdapDirectory, MailAccount
from careid_broker.errors import (
    AccountDisabledError,
    DirectoryDataError,
    InvalidCredentialsError,
)
from careid_devkit.slapd import DEMO_USER_PASSWORD, Slapd

pytestmark = pytest.mark.slapd

# mail -> (org, UUID, display name, active, AUP version accepted)
SEED = {
    "alex.morgan@nhs.net": ("RX1", "555000000001", "Alex Morgan", True, "2024-1"),
    "sam.patel@nhs.net": ("RX1", "555000000002", "Sam Patel", True, None),
    "jo.bloggs@nhs.net": ("RX1", "555000000003", "Jo Bloggs", False, "2024-1"),
    "lee.admin@nhs.net": ("RX1", "555000000004", "Lee Admin", True, "2024-1"),
    "kim.taylor@nhs.net": ("Y00001", "555000000005", "Kim Taylor", True, "2024-1"),
    "pat.jones@nhs.net": ("RX1", "555000000006", "Pat Jones", True, "2024-1"),
    "chris.old@nhs.net": ("RX1", "555000000007", "Chris Old", True, "2022-1"),
    "robin.hale@nhs.net": ("RX1", "555000000008", "Robin Hale", True, "2024-1"),
    "casey.doyle@nhs.net": ("Y00001", "555000000009", "Casey Doyle", True, "2024-1"),
}


@pytest.mark.parametrize("mail", sorted(SEED))
def test_every_seed_account_is_read_as_seeded(directory: LdapDirectory, mail: str) -> None:
    org, uuid, name, active, aup = SEED[mail]
    account = directory.find_account(mail)
    assert account is not None
    assert account.mail == mail
    assert account.dn == f"uid={mail.split('@')[0]},ou=people,dc=nhs,dc=example"
    assert account.display_name == name
    assert (account.given_name, account.surname) == tuple(name.split())
    assert account.org_code == org
    assert account.care_identity_uuid == uuid
    assert account.active is active
    assert account.aup_version == aup
    assert (account.aup_accepted_at is None) == (aup is None)
    assert account.problems == ()
    # The operational entryUUID, asked for by name: the entry's identity through renames.
    assert account.entry_id is not None and len(account.entry_id) == 36
    assert directory.find_account_by_uuid(uuid) == account


def test_aup_time_and_expiry_are_datetimes(directory: LdapDirectory) -> None:
    alex = directory.find_account("alex.morgan@nhs.net")
    kim = directory.find_account("kim.taylor@nhs.net")
    assert alex is not None and kim is not None
    assert alex.aup_accepted_at == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert alex.expires is None
    assert kim.expires == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_mail_match_ignores_case_and_surrounding_space(directory: LdapDirectory) -> None:
    account = directory.find_account("  Alex.Morgan@NHS.net ")
    assert account is not None and account.mail == "alex.morgan@nhs.net"


def test_unknown_mail_and_uuid_find_nothing(directory: LdapDirectory) -> None:
    assert directory.find_account("nobody@nhs.net") is None
    assert directory.find_account("") is None
    assert directory.find_account_by_uuid("555000000099") is None
    assert directory.find_care_identity("555000000099") is None


def test_admin_orgs(directory: LdapDirectory) -> None:
    lee = directory.find_account("lee.admin@nhs.net")
    alex = directory.find_account("alex.morgan@nhs.net")
    assert lee is not None and alex is not None
    assert lee.admin_org_codes == ("RX1",)
    assert lee.is_admin_for("rx1") and not lee.is_admin_for("Y00001")
    assert alex.admin_org_codes == ()
    assert not alex.is_admin_for("RX1")


# Each would match every account, or break the filter, if it were not escaped.
INJECTIONS = [
    "*",
    "*@nhs.net",
    "alex.morgan@nhs.net)(mail=*",
    "*)(|(mail=*",
    "alex.morgan@nhs.net\x00",
    "\x00",
    "alex\\2a",
    "\\",
    "(",
    ")",
    "alex.morgan@nhs.net)(objectClass=*))(|(mail=",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_filter_injection_finds_nothing_and_does_not_fail(
    directory: LdapDirectory, text: str
) -> None:
    assert directory.find_account(text) is None
    assert directory.find_account_by_uuid(text) is None
    assert directory.find_care_identity(text) is None
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate(text, DEMO_USER_PASSWORD)
    # A substring search may legitimately match a literal "*"/"(" — none has one.
    assert directory.search_accounts(text, ["RX1", "Y00001"]) == []


def test_injection_cannot_widen_the_organisation_scope(directory: LdapDirectory) -> None:
    assert directory.search_accounts("", ["*"]) == []
    assert directory.search_accounts("", ["RX1)(careidOrgCode=*"]) == []


def test_authenticate_with_the_right_password(directory: LdapDirectory) -> None:
    account = directory.authenticate("alex.morgan@nhs.net", DEMO_USER_PASSWORD)
    assert account == directory.find_account("alex.morgan@nhs.net")


def test_authenticate_does_not_check_account_state(directory: LdapDirectory) -> None:
    # The bind only proves the password; check_account then names what is wrong.
    account = directory.authenticate("jo.bloggs@nhs.net", DEMO_USER_PASSWORD)
    with pytest.raises(AccountDisabledError):
        directory.check_account(account)


def test_wrong_password_and_unknown_user_are_the_same_error(directory: LdapDirectory) -> None:
    with pytest.raises(InvalidCredentialsError) as wrong:
        directory.authenticate("sam.patel@nhs.net", "not-the-password")
    with pytest.raises(InvalidCredentialsError) as unknown:
        directory.authenticate("no.such.person@nhs.net", "not-the-password")
    assert wrong.value.code == unknown.value.code == BrokerCode.INVALID_CREDENTIALS
    assert wrong.value.message == unknown.value.message
    assert type(wrong.value) is type(unknown.value)


def test_another_accounts_password_does_not_work(directory: LdapDirectory) -> None:
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate("pat.jones@nhs.net", "Demo-Broker-Service-1")


def test_empty_password_is_refused_without_contacting_the_directory(own_slapd: Slapd) -> None:
    directory = make_directory(own_slapd)
    own_slapd.stop()
    # Were a bind attempted, the stopped directory would make this "unavailable".
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate("alex.morgan@nhs.net", "")
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate("alex.morgan@nhs.net", "x" * 5000)


# Account and Care Identity state (each seeded state, expiry, the AUP version, roles and
# links) are checked against slapd by the contract tests in test_memory_directory.py,
# which ask the in-memory directory and slapd the same questions.


def _mails(accounts: list[MailAccount]) -> list[str]:
    return [account.mail for account in accounts]


def test_search_is_limited_to_the_organisations(directory: LdapDirectory) -> None:
    rx1 = _mails(directory.search_accounts("", ["RX1"]))
    assert sorted(rx1) == sorted(m for m, seed in SEED.items() if seed[0] == "RX1")
    assert "kim.taylor@nhs.net" not in rx1
    assert _mails(directory.search_accounts("kim", ["RX1"])) == []
    assert _mails(directory.search_accounts("kim", ["Y00001"])) == ["kim.taylor@nhs.net"]
    both = directory.search_accounts("", ["RX1", "Y00001"])
    assert len(both) == len(SEED)
    assert directory.search_accounts("alex", []) == []


def test_search_by_name_mail_and_uuid_substring(directory: LdapDirectory) -> None:
    assert _mails(directory.search_accounts("Morgan", ["RX1"])) == ["alex.morgan@nhs.net"]
    assert _mails(directory.search_accounts("sam.pa", ["RX1"])) == ["sam.patel@nhs.net"]
    assert _mails(directory.search_accounts("000000004", ["RX1"])) == ["lee.admin@nhs.net"]
    # Sorted by display name: Chris Old, Jo Bloggs, Pat Jones...
    names = [a.display_name for a in directory.search_accounts("o", ["RX1"])]
    assert names == sorted(names, key=str.casefold) and len(names) >= 3


def test_search_limit(directory: LdapDirectory) -> None:
    assert len(directory.search_accounts("", ["RX1"], limit=2)) == 2
    assert len(directory.search_accounts("", ["RX1"], limit=0)) == 1


def test_an_expiry_no_calendar_holds_refuses_that_account_and_no_search(own_slapd: Slapd) -> None:
    # OpenLDAP takes 00010101000000+0100; in UTC it is in year 0, which no datetime holds.
    with bound_connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password) as admin:
        assert admin.modify(
            "uid=alex.morgan,ou=people,dc=nhs,dc=example",
            {"careidAccountExpires": [(MODIFY_REPLACE, ["00010101000000+0100"])]},
        )
    directory = make_directory(own_slapd)
    found = directory.search_accounts("", ["RX1"])
    assert sorted(_mails(found)) == sorted(m for m, seed in SEED.items() if seed[0] == "RX1")
    alex = directory.find_account("alex.morgan@nhs.net")
    assert alex is not None and alex.expires is None
    assert len(alex.problems) == 1 and alex.problems[0].startswith("careidAccountExpires: ")
    with pytest.raises(DirectoryDataError) as refused:
        directory.check_account(alex)
    assert refused.value.code is BrokerCode.DIRECTORY_DATA_INVALID


def test_ping(directory: LdapDirectory) -> None:
    assert directory.ping() is True


def test_service_account_cannot_read_passwords(demo_slapd: Slapd) -> None:
    with bound_connection(
        demo_slapd.url, demo_slapd.service_bind_dn, demo_slapd.service_password
    ) as connection:
        connection.search(
            "ou=people,dc=nhs,dc=example", "(mail=alex.morgan@nhs.net)", attributes=["*"]
        )
        (entry,) = connection.response
        assert "careidAccountStatus" in entry["attributes"]
        assert "userPassword" not in entry["attributes"]


def test_a_signed_in_user_sees_nothing_of_the_directory(demo_slapd: Slapd) -> None:
    with bound_connection(
        demo_slapd.url, "uid=alex.morgan,ou=people,dc=nhs,dc=example", DEMO_USER_PASSWORD
    ) as connection:
        connection.search("dc=nhs,dc=example", "(objectClass=*)", attributes=["*"])
        assert connection.response == []
