"""The directory's own lockout (ppolicy), AUP acceptance writes, and the write ACLs."""

from __future__ import annotations

import pytest
from directory_support import NOW, bound_connection, make_directory
from ldap3 import MODIFY_REPLACE
from ldap3.core.exceptions import LDAPBindError

from careid_broker.directory import AupRecordedButUnreadError
from careid_broker.directory.ldap import LdapDirectory
from careid_broker.errors import (
    AccountLockedError,
    AupNotAcceptedError,
    DirectoryReadOnlyError,
    DirectoryUnavailableError,
    InvalidCredentialsError,
    PasswordExpiredError,
)
from careid_devkit.slapd import DEMO_USER_PASSWORD, Slapd
from support.directory_writes import stop_once_written

pytestmark = pytest.mark.slapd

SAM = "sam.patel@nhs.net"
SAM_DN = "uid=sam.patel,ou=people,dc=nhs,dc=example"


def test_the_directorys_lockout_is_respected(own_slapd: Slapd) -> None:
    directory = make_directory(own_slapd)
    # The demo policy locks after five failures.
    for _ in range(5):
        with pytest.raises(InvalidCredentialsError):
            directory.authenticate(SAM, "wrong-password")
    with pytest.raises(AccountLockedError) as caught:
        directory.authenticate(SAM, DEMO_USER_PASSWORD)
    assert "locked" in caught.value.message
    with pytest.raises(AccountLockedError):
        directory.authenticate(SAM, "wrong-password")
    # Only that account.
    assert directory.authenticate("alex.morgan@nhs.net", DEMO_USER_PASSWORD).mail
    # The root DN (an administrator) clears the lock; the password works again.
    with bound_connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password) as admin:
        assert admin.modify(SAM_DN, {"pwdAccountLockedTime": [(MODIFY_REPLACE, [])]})
    assert directory.authenticate(SAM, DEMO_USER_PASSWORD).mail == SAM


def test_failed_binds_as_the_service_account_never_lock_it(own_slapd: Slapd) -> None:
    for _ in range(7):
        with pytest.raises(LDAPBindError):
            with bound_connection(own_slapd.url, own_slapd.service_bind_dn, "guess"):
                pass
    assert make_directory(own_slapd).ping() is True


def _aup_writer(own_slapd: Slapd) -> LdapDirectory:
    """The directory, writable with the AUP writer's account."""
    return make_directory(
        own_slapd,
        writable=True,
        write_bind_dn=own_slapd.aup_writer_bind_dn,
        write_bind_password=own_slapd.aup_writer_password,
    )


def test_accept_aup_records_version_and_time(own_slapd: Slapd) -> None:
    directory = _aup_writer(own_slapd)
    sam = directory.find_account(SAM)
    assert sam is not None
    with pytest.raises(AupNotAcceptedError):
        directory.check_account(sam)
    updated = directory.accept_aup(sam, "2024-1")
    assert updated.aup_version == "2024-1"
    assert updated.aup_accepted_at == NOW
    directory.check_account(updated)
    # It is in the directory, not just in the returned object — and survives a restart.
    own_slapd.stop()
    own_slapd.start()
    assert make_directory(own_slapd).find_account(SAM) == updated


def test_an_acceptance_that_cannot_be_read_back_is_still_said_to_be_recorded(
    own_slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _aup_writer(own_slapd)
    sam = directory.find_account(SAM)
    assert sam is not None
    stop_once_written(directory, own_slapd, monkeypatch)
    with pytest.raises(AupRecordedButUnreadError) as caught:
        directory.accept_aup(sam, "2024-1")
    # Refused as the read's failure (the directory is unavailable), but saying what
    # the directory now holds.
    assert caught.value.code == "directory_unavailable"
    assert caught.value.recorded.dn == SAM_DN and caught.value.recorded.mail == SAM
    assert caught.value.recorded.aup_version == "2024-1"
    assert caught.value.recorded.aup_accepted_at == NOW
    own_slapd.start()
    found = make_directory(own_slapd).find_account(SAM)
    assert found is not None and found.aup_version == "2024-1"


def test_accept_aup_is_refused_when_read_only(own_slapd: Slapd) -> None:
    directory = make_directory(own_slapd)
    sam = directory.find_account(SAM)
    assert sam is not None
    with pytest.raises(DirectoryReadOnlyError):
        directory.accept_aup(sam, "2024-1")
    assert directory.find_account(SAM) == sam


def test_the_read_only_service_account_cannot_write(own_slapd: Slapd) -> None:
    # writable, but with no writer account: the service account's write is refused by
    # the directory's ACL, and that refusal is a failure, never a silent success.
    directory = make_directory(own_slapd, writable=True)
    sam = directory.find_account(SAM)
    assert sam is not None
    with pytest.raises(DirectoryUnavailableError) as caught:
        directory.accept_aup(sam, "2024-1")
    assert "insufficientAccessRights" in (caught.value.detail or "")
    assert directory.find_account(SAM) == sam


def test_the_aup_writer_may_change_nothing_else(own_slapd: Slapd) -> None:
    with bound_connection(
        own_slapd.url, own_slapd.aup_writer_bind_dn, own_slapd.aup_writer_password
    ) as writer:
        assert not writer.modify(
            "uid=jo.bloggs,ou=people,dc=nhs,dc=example",
            {"careidAccountStatus": [(MODIFY_REPLACE, ["active"])]},
        )
        assert writer.result["description"] == "insufficientAccessRights"
    jo = make_directory(own_slapd).find_account("jo.bloggs@nhs.net")
    assert jo is not None and not jo.active


def test_a_password_reset_by_an_administrator_must_be_changed_first(own_slapd: Slapd) -> None:
    with bound_connection(own_slapd.url, own_slapd.root_dn, own_slapd.root_password) as admin:
        assert admin.modify(
            "cn=default,ou=policies,dc=nhs,dc=example",
            {"pwdMustChange": [(MODIFY_REPLACE, ["TRUE"])]},
        )
        assert admin.modify(SAM_DN, {"pwdReset": [(MODIFY_REPLACE, ["TRUE"])]})
    directory = make_directory(own_slapd)
    with pytest.raises(PasswordExpiredError):
        directory.authenticate(SAM, DEMO_USER_PASSWORD)
    assert directory.authenticate("alex.morgan@nhs.net", DEMO_USER_PASSWORD).mail
