"""The in-memory directory answers as the LDAP adapter over slapd does: a contract test.

Each contract test runs twice, with the same calls and the same assertions: against
`MemoryDirectory.from_ldif(config/ldap/demo.ldif)`, and against `LdapDirectory` on a real
slapd seeded from the same file (marked `slapd`). Then one test loads a seed with awkward
entries into both and compares the two directories' answers to the same questions side
by side. The last group tests the memory directory's own parts (the LDIF reader, password
hashes, a lock running out after 15 minutes of clock time).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest
from directory_support import NOW

from careid_broker.codes import BrokerCode
from careid_broker.directory import (
    CareIdentity,
    DirectoryConfig,
    LdapDirectory,
    MailAccount,
    Role,
)
from careid_broker.directory.memory import MemoryDirectory
from careid_broker.directory.memory_seed import (
    AccountRecord,
    HashScheme,
    LockoutPolicy,
    PasswordHash,
    load_ldif_seed,
    parse_ldif,
)
from careid_broker.directory.models import Directory
from careid_broker.errors import (
    AccountDisabledError,
    AccountExpiredError,
    AccountLockedError,
    AupNotAcceptedError,
    BrokerError,
    CareIdentityInactiveError,
    CareIdentityNotFoundError,
    DirectoryDataError,
    DirectoryReadOnlyError,
    DirectoryUnavailableError,
    InvalidCredentialsError,
    PasswordExpiredError,
)
from careid_devkit.slapd import DEMO_AUP_VERSION, DEMO_SEED, DEMO_USER_PASSWORD, Slapd
from support.clock import FakeClock

BACKENDS = ["memory", pytest.param("slapd", marks=pytest.mark.slapd)]

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
ALEX, SAM, JO, KIM = (
    "alex.morgan@nhs.net",
    "sam.patel@nhs.net",
    "jo.bloggs@nhs.net",
    "kim.taylor@nhs.net",
)

# Each would match every account, or break a filter, if it were not escaped.
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
    "alex.morgan@nhs.net)(objectClass=*))(|(mail=",
]


@dataclass(kw_only=True)
class Subject:
    """A directory under test, its clock, and the ways a test may disturb it."""

    directory: Directory
    clock: FakeClock
    go_down: Callable[[], None]
    come_back: Callable[[], None]
    wait: Callable[[float], None]  # let seconds pass: real ones for slapd, the clock's here


class Build(Protocol):
    """The `build` fixture's factory: a memory directory (always a fresh one) or slapd."""

    def __call__(
        self,
        *,
        private: bool = False,
        seed: Path = DEMO_SEED,
        writable: bool = False,
        current_aup_version: str = DEMO_AUP_VERSION,
    ) -> Subject: ...


def _memory_subject(seed: Path, writable: bool, current_aup_version: str) -> Subject:
    clock = FakeClock(NOW)
    memory = MemoryDirectory.from_ldif(
        seed, clock=clock, current_aup_version=current_aup_version, writable=writable
    )
    return Subject(
        directory=memory,
        clock=clock,
        go_down=lambda: memory.set_available(False),
        come_back=lambda: memory.set_available(True),
        wait=lambda seconds: clock.advance(timedelta(seconds=seconds)),
    )


def _ldap(slapd: Slapd, clock: Callable[[], datetime], **settings: Any) -> LdapDirectory:
    settings = {"connect_timeout": 1.0, "receive_timeout": 1.0, **settings}
    if settings.get("writable"):
        settings["write_bind_dn"] = slapd.aup_writer_bind_dn
        settings["write_bind_password"] = slapd.aup_writer_password
    return LdapDirectory(
        DirectoryConfig.from_mapping(slapd.directory_settings(**settings)), clock=clock
    )


def _shared_must_stay_up() -> None:
    raise AssertionError("only a private directory may be stopped: build(private=True)")


@pytest.fixture(params=BACKENDS)
def build(request: pytest.FixtureRequest) -> Build:
    """Builds the directory under test over a seed (the demo's unless told otherwise).

    slapd: the shared demo directory for tests that only read; `private=True` (or another
    seed) starts one of the test's own, which it may lock, write to or stop.
    """
    if request.param == "memory":

        def make_memory(
            *,
            private: bool = False,
            seed: Path = DEMO_SEED,
            writable: bool = False,
            current_aup_version: str = DEMO_AUP_VERSION,
        ) -> Subject:
            return _memory_subject(seed, writable, current_aup_version)

        return make_memory

    start: Callable[..., Slapd] = request.getfixturevalue("slapd_factory")
    shared: Slapd = request.getfixturevalue("demo_slapd")

    def make(
        *,
        private: bool = False,
        seed: Path = DEMO_SEED,
        writable: bool = False,
        current_aup_version: str = DEMO_AUP_VERSION,
    ) -> Subject:
        own = private or writable or seed != DEMO_SEED
        slapd = start(seed=seed) if own else shared
        clock = FakeClock(NOW)
        ldap = _ldap(slapd, clock, writable=writable, current_aup_version=current_aup_version)
        return Subject(
            directory=ldap,
            clock=clock,
            go_down=slapd.stop if own else _shared_must_stay_up,
            come_back=slapd.start,
            wait=time.sleep,
        )

    return make


def _found(directory: Directory, mail: str) -> MailAccount:
    account = directory.find_account(mail)
    assert account is not None, mail
    return account


# Reading accounts and Care Identities.


@pytest.mark.parametrize("mail", sorted(SEED))
def test_every_demo_account_is_read_as_seeded(build: Build, mail: str) -> None:
    directory = build().directory
    org, uuid, name, active, aup = SEED[mail]
    account = _found(directory, mail)
    assert account.mail == mail
    assert account.dn == f"uid={mail.split('@')[0]},ou=people,dc=nhs,dc=example"
    assert account.display_name == name
    assert (account.given_name, account.surname) == tuple(name.split())
    assert (account.org_code, account.care_identity_uuid) == (org, uuid)
    assert account.active is active
    assert account.aup_version == aup
    assert (account.aup_accepted_at is None) == (aup is None)
    assert account.problems == ()
    assert directory.find_account_by_uuid(uuid) == account


def test_times_are_aware_datetimes(build: Build) -> None:
    directory = build().directory
    assert _found(directory, ALEX).aup_accepted_at == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert _found(directory, ALEX).expires is None
    assert _found(directory, KIM).expires == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "typed",
    [
        "  Alex.Morgan@NHS.net ",
        "ALEX.MORGAN@NHS.NET",
        "alex.morgan@nhs.net\u00a0",
        "\talex.morgan@nhs.net",
    ],
)
def test_mail_lookup_ignores_case_and_surrounding_space(build: Build, typed: str) -> None:
    assert _found(build().directory, typed).mail == ALEX


@pytest.mark.parametrize(
    "typed",
    [
        "nobody@nhs.net",
        "",
        "   ",
        "alex.morgan",
        "\u212aim.taylor@nhs.net",  # a Kelvin sign: Unicode case folding would say "k"
        "alex.morg\u00e4n@nhs.net",
        "alex.morgan@nhs.net" + "x" * 320,
        *INJECTIONS,
    ],
)
def test_mail_lookup_misses(build: Build, typed: str) -> None:
    assert build().directory.find_account(typed) is None


def test_uuid_lookups(build: Build) -> None:
    directory = build().directory
    assert _found(directory, ALEX) == directory.find_account_by_uuid(" 555000000001 ")
    for missing in ["555000000099", "\uff15\uff15\uff15000000001", "", "5550000000*", "*"]:
        assert directory.find_account_by_uuid(missing) is None
        assert directory.find_care_identity(missing) is None


def test_care_identity_roles_and_status(build: Build) -> None:
    directory = build().directory
    alex = directory.find_care_identity("555000000001")
    assert alex is not None
    assert (alex.dn, alex.uuid) == (
        "careidUuid=555000000001,ou=careidentities,dc=nhs,dc=example",
        "555000000001",
    )
    assert alex.active and alex.status == "active" and alex.problems == ()
    assert alex.roles == (Role(code="R8000", name="Clinical Practitioner", org_code="RX1"),)
    assert directory.check_care_identity(alex) is alex
    lee = directory.find_care_identity("555000000004")
    assert lee is not None
    assert lee.roles == (
        Role(code="R8008", name="Admin/Clinical Support", org_code="RX1"),
        Role(code="R8003", name="Health Professional", org_code="RX1"),
    )
    pat = directory.find_care_identity(" 555000000006")
    assert pat is not None and not pat.active and pat.status == "inactive"
    with pytest.raises(CareIdentityInactiveError):
        directory.check_care_identity(pat)
    with pytest.raises(CareIdentityNotFoundError):
        directory.check_care_identity(directory.find_care_identity("555000000099"))


@pytest.mark.parametrize("mail", sorted(SEED))
def test_every_account_links_to_its_care_identity(build: Build, mail: str) -> None:
    directory = build().directory
    uuid = _found(directory, mail).care_identity_uuid
    assert uuid is not None
    identity = directory.find_care_identity(uuid)
    assert identity is not None and identity.uuid == uuid
    assert identity.active is (mail != "pat.jones@nhs.net")


def test_admin_rights(build: Build) -> None:
    directory = build().directory
    lee, alex = _found(directory, "lee.admin@nhs.net"), _found(directory, ALEX)
    assert lee.admin_org_codes == ("RX1",)
    assert lee.is_admin_for("rx1") and not lee.is_admin_for("Y00001")
    assert alex.admin_org_codes == () and not alex.is_admin_for("RX1")


# Account state.

CHECKS: list[tuple[str, type[BrokerError] | None]] = [
    ("alex.morgan@nhs.net", None),
    ("sam.patel@nhs.net", AupNotAcceptedError),
    ("jo.bloggs@nhs.net", AccountDisabledError),
    ("lee.admin@nhs.net", None),
    ("kim.taylor@nhs.net", None),
    ("pat.jones@nhs.net", None),  # the mail account is fine; the Care Identity is not
    ("chris.old@nhs.net", AupNotAcceptedError),
]


@pytest.mark.parametrize(("mail", "refusal"), CHECKS)
def test_check_account_for_each_demo_state(
    build: Build, mail: str, refusal: type[BrokerError] | None
) -> None:
    directory = build().directory
    account = _found(directory, mail)
    if refusal is None:
        directory.check_account(account)
        return
    with pytest.raises(refusal) as caught:
        directory.check_account(account)
    assert type(caught.value) is refusal and caught.value.message


def test_expiry_follows_the_clock(build: Build) -> None:
    subject = build()
    kim = _found(subject.directory, KIM)
    subject.clock.now = datetime(2099, 12, 31, 23, 59, 58, tzinfo=UTC)
    subject.directory.check_account(kim)
    subject.clock.now = datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(AccountExpiredError):
        subject.directory.check_account(kim)


def test_aup_check_follows_the_configured_version(build: Build) -> None:
    directory = build(current_aup_version="2022-1").directory
    assert directory.current_aup_version == "2022-1"
    directory.check_account(_found(directory, "chris.old@nhs.net"))
    with pytest.raises(AupNotAcceptedError):
        directory.check_account(_found(directory, ALEX))


# Password sign-in (private directories: a wrong password counts towards a lockout).


def test_authenticate(build: Build) -> None:
    directory = build(private=True).directory
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD) == _found(directory, ALEX)
    assert directory.authenticate(" Alex.Morgan@NHS.NET", DEMO_USER_PASSWORD).mail == ALEX
    # The bind only proves the password; check_account then names what is wrong.
    with pytest.raises(AccountDisabledError):
        directory.check_account(directory.authenticate(JO, DEMO_USER_PASSWORD))
    with pytest.raises(InvalidCredentialsError) as wrong:
        directory.authenticate(SAM, "not-the-password")
    with pytest.raises(InvalidCredentialsError) as unknown:
        directory.authenticate("no.such.person@nhs.net", DEMO_USER_PASSWORD)
    assert (wrong.value.code, wrong.value.message) == (unknown.value.code, unknown.value.message)
    for mail, password in [
        ("pat.jones@nhs.net", "Demo-Broker-Service-1"),  # a service account's password
        (ALEX, DEMO_USER_PASSWORD.lower()),
        (ALEX, DEMO_USER_PASSWORD + " "),
        (ALEX, ""),
        (ALEX, "\ud800"),
        (ALEX, "\u00e9" * 513),  # 1026 bytes of UTF-8: refused before any bind
        (ALEX, "x" * 1024),
        ("*", DEMO_USER_PASSWORD),
        (ALEX + ")(mail=*", DEMO_USER_PASSWORD),
    ]:
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate(mail, password)


class _Stop(Exception):
    """Raised by a `before_bind` that refuses the attempt."""


def test_before_bind_sees_what_the_search_found_and_can_stop_the_bind(build: Build) -> None:
    directory = build(private=True).directory
    seen: list[MailAccount | None] = []
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD, before_bind=seen.append).mail == ALEX
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate("no.such.person@nhs.net", "x", before_bind=seen.append)
    assert seen == [_found(directory, ALEX), None]

    def refuse(_: MailAccount | None) -> None:
        raise _Stop

    # Stopped before the bind: six wrong passwords the directory never saw lock nothing.
    for _ in range(6):
        with pytest.raises(_Stop):
            directory.authenticate(SAM, "wrong-password", before_bind=refuse)
    assert directory.authenticate(SAM, DEMO_USER_PASSWORD).mail == SAM


def test_the_directorys_lockout(build: Build) -> None:
    directory = build(private=True).directory
    for _ in range(5):  # the demo policy locks after five failures
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate(SAM, "wrong-password")
    for password in [DEMO_USER_PASSWORD, "wrong-password"]:
        with pytest.raises(AccountLockedError) as caught:
            directory.authenticate(SAM, password)
        assert "locked" in caught.value.message
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX  # only that account


def test_a_good_bind_clears_the_failures(build: Build) -> None:
    directory = build(private=True).directory
    for _ in range(4):
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate(SAM, "wrong-password")
    directory.authenticate(SAM, DEMO_USER_PASSWORD)
    for _ in range(4):
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate(SAM, "wrong-password")
    assert directory.authenticate(SAM, DEMO_USER_PASSWORD).mail == SAM


@pytest.fixture
def short_policy_seed(tmp_path: Path) -> Path:
    """The demo seed with a one-second failure window and a two-second lock."""
    text = DEMO_SEED.read_text(encoding="utf-8")
    for old, new in [
        ("pwdFailureCountInterval: 900", "pwdFailureCountInterval: 1"),
        ("pwdLockoutDuration: 900", "pwdLockoutDuration: 2"),
    ]:
        assert text.count(old) == 1
        text = text.replace(old, new)
    path = tmp_path / "short-policy.ldif"
    path.write_text(text, encoding="utf-8")
    return path


def test_failures_leave_the_window_and_the_lock_runs_out(
    build: Build, short_policy_seed: Path
) -> None:
    subject = build(seed=short_policy_seed)
    directory = subject.directory

    def fail(times: int) -> None:
        for _ in range(times):
            with pytest.raises(InvalidCredentialsError):
                directory.authenticate(SAM, "wrong-password")

    fail(4)
    # ppolicy counts in whole seconds: a failure counts until 1 s after its second.
    subject.wait(2.2)
    fail(1)  # had the first four still counted, this would lock and the next say so
    fail(4)  # the fifth failure inside the window: locked from now
    with pytest.raises(AccountLockedError):
        directory.authenticate(SAM, DEMO_USER_PASSWORD)
    subject.wait(2.2)
    assert directory.authenticate(SAM, DEMO_USER_PASSWORD).mail == SAM


# Administrators' search.


def _mails(accounts: list[MailAccount]) -> list[str]:
    return [account.mail for account in accounts]


def test_search_is_limited_to_the_organisations(build: Build) -> None:
    directory = build().directory
    rx1 = [mail for mail, seed in SEED.items() if seed[0] == "RX1"]
    assert sorted(_mails(directory.search_accounts("", ["RX1"]))) == sorted(rx1)
    assert sorted(_mails(directory.search_accounts("  ", [" rx1 ", ""]))) == sorted(rx1)
    assert _mails(directory.search_accounts("kim", ["RX1"])) == []
    assert _mails(directory.search_accounts("kim", ["Y00001"])) == [KIM]
    assert len(directory.search_accounts("", ["RX1", "Y00001"])) == len(SEED)
    for orgs in [[], [""], ["*"], ["RX1)(careidOrgCode=*"], ["\uff32X1"]]:
        assert directory.search_accounts("", orgs) == []
    assert directory.search_accounts("alex", []) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Morgan", [ALEX]),
        ("MORGAN", [ALEX]),
        ("alex  morgan", [ALEX]),  # runs of spaces match one
        ("sam.pa", [SAM]),
        ("SAM.PA", [SAM]),
        ("000000004", ["lee.admin@nhs.net"]),
        ("\uff4b\uff49\uff4d", [KIM]),  # fullwidth "kim": the name matches, normalised
        ("\u212aim", [KIM]),  # a Kelvin sign: not the mail (IA5), but the name
        ("m\u00f6rgan", []),
        ("", sorted(SEED)),
        *((text, []) for text in INJECTIONS),
    ],
)
def test_search_by_name_mail_and_uuid_substring(build: Build, text: str, found: list[str]) -> None:
    accounts = build().directory.search_accounts(text, ["RX1", "Y00001"])
    assert sorted(_mails(accounts)) == sorted(found)


def test_search_sorts_by_name_and_stops_at_the_limit_in_directory_order(build: Build) -> None:
    directory = build().directory
    names = [a.display_name for a in directory.search_accounts("o", ["RX1"])]
    assert names == sorted(names, key=str.casefold) and len(names) >= 3
    # The server returns the first entries it holds (seed order), which are then sorted.
    assert _mails(directory.search_accounts("", ["RX1"], limit=3)) == [ALEX, JO, SAM]
    assert _mails(directory.search_accounts("o", ["RX1"], limit=2)) == [ALEX, JO]
    assert len(directory.search_accounts("", ["RX1"], limit=0)) == 1


# Recording AUP acceptance.


def test_accept_aup_records_version_and_time(build: Build) -> None:
    subject = build(writable=True)
    directory = subject.directory
    subject.clock.now = NOW + timedelta(microseconds=654321)
    sam = _found(directory, SAM)
    with pytest.raises(ValueError):
        directory.accept_aup(sam, "  ")
    updated = directory.accept_aup(sam, " 2024-1 ")
    assert updated == dataclasses.replace(sam, aup_version="2024-1", aup_accepted_at=NOW)
    directory.check_account(updated)
    assert _found(directory, SAM) == updated
    gone = dataclasses.replace(sam, dn="uid=nobody,ou=people,dc=nhs,dc=example")
    with pytest.raises(DirectoryUnavailableError):
        directory.accept_aup(gone, "2024-1")


def test_accept_aup_is_refused_when_read_only(build: Build) -> None:
    directory = build().directory
    sam = _found(directory, SAM)
    with pytest.raises(DirectoryReadOnlyError):
        directory.accept_aup(sam, "2024-1")
    assert _found(directory, SAM) == sam


# An outage.


def test_a_directory_outage_denies_and_then_recovers(build: Build) -> None:
    subject = build(private=True)
    directory = subject.directory
    alex = _found(directory, ALEX)
    alex_identity = directory.find_care_identity("555000000001")
    subject.go_down()
    assert directory.ping() is False
    refused: list[Callable[[], object]] = [
        lambda: directory.find_account(ALEX),
        lambda: directory.find_account_by_uuid("555000000001"),
        lambda: directory.find_care_identity("555000000001"),
        lambda: directory.authenticate(ALEX, DEMO_USER_PASSWORD),
        lambda: directory.authenticate(ALEX, "wrong-password"),
        lambda: directory.search_accounts("alex", ["RX1"]),
    ]
    for call in refused:
        with pytest.raises(DirectoryUnavailableError) as caught:
            call()
        assert caught.value.message
    # What never reaches a server answers as before.
    assert directory.find_account("") is None
    assert directory.find_care_identity("555\x00") is None
    assert directory.search_accounts("alex", []) == []
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate(ALEX, "")
    directory.check_account(alex)
    assert directory.check_care_identity(alex_identity) is alex_identity
    with pytest.raises(DirectoryReadOnlyError):
        directory.accept_aup(alex, "2024-1")
    subject.come_back()
    assert directory.ping() is True
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD) == alex


# Side by side: one awkward seed in both, the same questions, the same answers.

AWKWARD_ENTRIES = """
dn: uid=x.strasse,ou=people,dc=nhs,dc=example
objectClass: inetOrgPerson
objectClass: careidMailAccount
uid: x.strasse
cn: Gro\u00df Stra\u00dfe
sn: Stra\u00dfe
givenName: \u0130lk\u00e9
# "İlké  Straße ﬀx", base64
displayName:: xLBsa8OpICBTdHJhw59lIO+sgHg=
mail: x.strasse@nhs.net
mail: ilke.strasse@nhs.net
userPassword: Plain-Text-Password-9
careidAccountStatus: active
careidAupAcceptedVersion: 2024-1
careidAupAcceptedTime: 20240301093000+0100
careidOrgCode: ZZ9
careidAdminOrgCode: ZZ9
careidAdminOrgCode: rx1
careidCareIdentityUuid: 555000000090

dn: uid=no.name,ou=people,dc=nhs,dc=example
objectClass: inetOrgPerson
objectClass: careidMailAccount
uid: no.name
cn: No Name
sn: Nameless
mail: no.name@nhs.net
careidAccountStatus: suspended
careidOrgCode: ZZ9
careidCareIdentityUuid: 555000000090

dn: uid=long.fold,ou=people,dc=nhs,dc=example
objectClass: inetOrgPerson
objectClass: careidMailAccount
uid: long.fold
cn: Folded Line
sn: Fold
displayName: Rowan Folded-Lin
 e Name
mail: long.fold@nhs.net
userPassword: {SSHA}heu68a803J8NyEbzFghOGYjkHKj5dIyb7/fK8Q==
careidAccountStatus: Disabled
careidAccountExpires: 20250601120000Z
careidAupAcceptedVersion: 2024-1
careidOrgCode: zz9
careidCareIdentityUuid: 555000000091
pwdPolicySubentry: cn=services,ou=policies,dc=nhs,dc=example

dn: careidUuid=555000000090,ou=careidentities,dc=nhs,dc=example
objectClass: careidCareIdentity
careidUuid: 555000000090
careidStatus: active
careidRole: R8000|Clinical | Practitioner|ZZ9
careidRole: broken-role

dn: careidUuid=555000000091,ou=careidentities,dc=nhs,dc=example
objectClass: careidCareIdentity
careidUuid: 555000000091
careidStatus: retired
"""


def _outcome(call: Callable[[], object]) -> object:
    """What a call gave: its value, or the error's class and code (details may differ).

    An account's entry id is each directory's own (slapd draws its entryUUIDs), so only
    its being there is compared.
    """
    try:
        return _same_entry_ids(call())
    except (BrokerError, ValueError) as exc:
        return (type(exc).__name__, getattr(exc, "code", None))


def _same_entry_ids(answer: object) -> object:
    if isinstance(answer, MailAccount):
        return dataclasses.replace(answer, entry_id="given" if answer.entry_id else None)
    if isinstance(answer, list):
        return [_same_entry_ids(item) for item in answer]
    return answer


@pytest.mark.slapd
def test_both_directories_give_the_same_answers(
    slapd_factory: Callable[..., Slapd], tmp_path: Path
) -> None:
    seed = tmp_path / "awkward.ldif"
    seed.write_text(DEMO_SEED.read_text(encoding="utf-8") + AWKWARD_ENTRIES, encoding="utf-8")
    clock = FakeClock(NOW)
    memory = MemoryDirectory.from_ldif(
        seed, clock=clock, current_aup_version=DEMO_AUP_VERSION, writable=True
    )
    ldap = _ldap(slapd_factory(seed=seed), clock, writable=True)
    both: list[Directory] = [memory, ldap]

    def same(method: str, *args: object, **kwargs: object) -> object:
        """Ask both directories; their answers must be equal."""
        memory_answer, ldap_answer = (
            _outcome(partial(getattr(directory, method), *args, **kwargs)) for directory in both
        )
        assert memory_answer == ldap_answer, (method, args)
        return memory_answer

    mails = [*SEED, "x.strasse@nhs.net", "no.name@nhs.net", "long.fold@nhs.net"]
    typed = [*mails, "ILKE.Strasse@nhs.net", " X.STRASSE@NHS.NET", "\u212aim.taylor@nhs.net"]
    found: dict[str, object] = {}
    for mail in [*typed, "", "nobody@nhs.net", *INJECTIONS]:
        found[mail] = account = same("find_account", mail)
        if isinstance(account, MailAccount):
            same("check_account", account)
    uuids = [f"5550000000{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 90, 91, 99)]
    for uuid in [*uuids, " 555000000005 ", "\uff15\uff15\uff15000000001", "", *INJECTIONS]:
        found[uuid] = same("find_account_by_uuid", uuid)
        identity = same("find_care_identity", uuid)
        same("check_care_identity", identity if isinstance(identity, CareIdentity) else None)
    texts = ["", "o", "strasse", "STRA\u00dfE", "ilk", "\u0130LK", "\ufb00x", "\uff4b\uff49\uff4d"]
    texts += ["\u212aim", "alex  morgan", "m\u00f6rgan", "lin e", "Folded-Line Name", "nameless"]
    texts += ["ilke.strasse", "55500000009", "nhs.net", "*", "(", "a\x00", "x" * 200]
    for text in texts:
        for orgs in [["RX1", "Y00001", "ZZ9"], ["zz9"], [" ZZ9 ", "\uff32X1"], ["*"]]:
            found[f"search {text} {orgs}"] = same("search_accounts", text, orgs)
    for limit in (0, 2, 4):
        same("search_accounts", "", ["RX1", "ZZ9"], limit=limit)
    sign_ins = [(m, DEMO_USER_PASSWORD) for m in mails]
    sign_ins += [("ilke.strasse@nhs.net", "Plain-Text-Password-9"), ("no.name@nhs.net", "x")]
    sign_ins += [("long.fold@nhs.net", "wrong")] * 6 + [("long.fold@nhs.net", DEMO_USER_PASSWORD)]
    sign_ins += [(SAM, "wrong")] * 6 + [(SAM, DEMO_USER_PASSWORD)]
    signed_in = [same("authenticate", m, p) for m, p in sign_ins]
    for mail in [SAM, "x.strasse@nhs.net", "no.name@nhs.net", "chris.old@nhs.net"]:
        account = memory.find_account(mail)
        assert account is not None
        same("accept_aup", account, "2025-2")
    assert same("ping") is True

    # The questions were not vacuous: the answers hold what the awkward entries test.
    strasse = found["ILKE.Strasse@nhs.net"]  # the second value of a multi-valued mail
    assert (
        isinstance(strasse, MailAccount)
        and strasse.display_name == "\u0130lk\u00e9  Stra\u00dfe \ufb00x"
    )
    assert found["555000000090"] == ("DirectoryDataError", BrokerCode.DIRECTORY_DATA_INVALID)
    fold = found["long.fold@nhs.net"]
    assert isinstance(fold, MailAccount) and fold.display_name == "Rowan Folded-Line Name"
    assert found["search strasse ['zz9']"] == [strasse]
    assert isinstance(signed_in[-8], MailAccount)  # the services policy never locks
    assert signed_in[-1] == ("AccountLockedError", BrokerCode.ACCOUNT_LOCKED)


# The memory directory's own parts.


def test_the_demo_seed_loads_every_person_and_record() -> None:
    seed = load_ldif_seed(DEMO_SEED)
    assert [record.account.mail for record in seed.accounts] == list(SEED)
    assert [identity.uuid for identity in seed.care_identities] == [s[1] for s in SEED.values()]
    for record in seed.accounts:
        assert record.password is not None and record.password.scheme is HashScheme.SSHA
        assert record.password.verify(DEMO_USER_PASSWORD.encode())
        assert record.lockout == LockoutPolicy(
            max_failures=5,
            failure_window=timedelta(minutes=15),
            lock_duration=timedelta(minutes=15),
        )


def test_a_lock_runs_out_after_fifteen_minutes_of_clock_time() -> None:
    clock = FakeClock(NOW)
    directory = MemoryDirectory.from_ldif(
        DEMO_SEED, clock=clock, current_aup_version=DEMO_AUP_VERSION
    )
    for _ in range(5):
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate(SAM, "wrong-password")
    clock.advance(timedelta(minutes=14, seconds=59))
    with pytest.raises(AccountLockedError):
        directory.authenticate(SAM, DEMO_USER_PASSWORD)
    clock.advance(timedelta(seconds=1))
    assert directory.authenticate(SAM, DEMO_USER_PASSWORD).mail == SAM


def test_records_built_in_code() -> None:
    password = PasswordHash.of("Correct-Horse-1", log2_n=10)
    assert password.scheme is HashScheme.SCRYPT and "Correct" not in repr(password)
    account = MailAccount(
        dn="uid=t,ou=people,dc=nhs,dc=example",
        mail="t@nhs.net",
        display_name="T",
        active=True,
        aup_version="v1",
        org_code="RX1",
    )
    directory = MemoryDirectory(
        accounts=[
            AccountRecord(account=account, password=password, lockout=None),
            AccountRecord(
                account=dataclasses.replace(account, dn="uid=u,dc=x", mail="u@nhs.net"),
                password=password,
                must_change_password=True,
            ),
        ],
        clock=FakeClock(NOW),
        current_aup_version="v1",
    )
    for _ in range(10):  # no lockout policy: never locked
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate("t@nhs.net", "wrong")
    assert directory.authenticate("T@nhs.net", "Correct-Horse-1") == account
    with pytest.raises(PasswordExpiredError):
        directory.authenticate("u@nhs.net", "Correct-Horse-1")
    with pytest.raises(ValueError, match="two accounts"):
        MemoryDirectory(
            accounts=[AccountRecord(account=account)] * 2,
            clock=FakeClock(),
            current_aup_version="v1",
        )


def test_two_accounts_with_one_address_are_a_data_fault() -> None:
    account = MailAccount(dn="uid=a,dc=x", mail="a@nhs.net", display_name="A", active=True)
    twin = dataclasses.replace(account, dn="uid=b,dc=x", mail="A@NHS.NET")
    directory = MemoryDirectory(
        accounts=[AccountRecord(account=account), AccountRecord(account=twin)],
        clock=FakeClock(NOW),
        current_aup_version="v1",
    )
    with pytest.raises(DirectoryDataError):
        directory.find_account("a@nhs.net")


def test_ldif_reader() -> None:
    (entry,) = parse_ldif(
        "version: 1\n# a comment\n continued\ndn: cn=a,dc=x\r\nobjectClass: top\n"
        "description: folded\n  value\ncn;lang-en:: w6lh\n"
    )
    assert entry.dn == "cn=a,dc=x"
    assert entry.get("description") == ["folded value"]
    assert entry.get("CN") == ["\u00e9a"]
    for bad in [
        "dn: cn=a\nchangetype: delete\n",
        "dn: cn=a\njpegPhoto:< file:///etc/passwd\n",
        "cn: a\n",
        "dn: cn=a\nno colon here\n",
        "dn: cn=a\ncn:: not base64!\n",
    ]:
        with pytest.raises(ValueError, match="line"):
            parse_ldif(bad)


def test_unsupported_password_schemes_are_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="CRYPT"):
        PasswordHash.from_user_password("{CRYPT}$6$abc")
    plain = PasswordHash.from_user_password("Plain-1")
    assert plain.scheme is HashScheme.SCRYPT and plain.verify(b"Plain-1")
    assert not plain.verify(b"plain-1")
