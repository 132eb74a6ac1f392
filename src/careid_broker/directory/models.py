"""What the directory tells the broker: mail accounts and Care Identity records."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class Role:
    """A national RBAC role held at an organisation (CIS2 `nhsid_nrbac_roles`)."""

    code: str
    name: str
    org_code: str


@dataclass(frozen=True, kw_only=True)
class MailAccount:
    """A mail account as read from the directory.

    `problems` lists values that could not be read (a malformed expiry time, an unknown
    status word); `check_account` refuses an account that has any, so a reading fault
    denies rather than allows. The account is still returned, so an administrator can
    find it and see what is wrong.
    """

    dn: str
    mail: str
    display_name: str
    given_name: str | None = None
    surname: str | None = None
    active: bool
    aup_version: str | None = None
    aup_accepted_at: datetime | None = None
    org_code: str | None = None
    admin_org_codes: tuple[str, ...] = ()
    expires: datetime | None = None
    care_identity_uuid: str | None = None
    # The directory's immutable identifier of the entry (None: not kept or not mapped).
    entry_id: str | None = None
    problems: tuple[str, ...] = ()

    def is_entry(self, *, dn: str, entry_id: str | None) -> bool:
        """Whether this account is the directory entry known by `entry_id` (when both
        identifiers are known: it survives a rename or a move) or else by `dn`
        (compared trimmed and case-insensitively, as DNs are compared elsewhere).

        An address given to another entry (another person) keeps its mail, and may keep
        its DN too where the new entry is named as the old one was: the identifier is
        what tells them apart, the DN only when one side has none.
        """
        if entry_id is not None and self.entry_id is not None:
            return self.entry_id == entry_id
        return self.dn.strip().casefold() == dn.strip().casefold()

    def is_admin_for(self, org_code: str) -> bool:
        """Whether the account is a local administrator for that organisation."""
        wanted = org_code.casefold()
        return any(code.casefold() == wanted for code in self.admin_org_codes)


@dataclass(frozen=True, kw_only=True)
class CareIdentity:
    """A Care Identity record: the UUID, whether it is active, and its roles."""

    dn: str
    uuid: str
    active: bool
    status: str | None
    roles: tuple[Role, ...] = ()
    problems: tuple[str, ...] = ()


class Directory(Protocol):
    """What the broker's services need from a directory (an LDAP server or a fake)."""

    @property
    def current_aup_version(self) -> str:
        """The acceptable use policy version users must have accepted."""
        ...

    def find_account(self, mail: str) -> MailAccount | None:
        """The account with that mail address, or None."""
        ...

    def find_account_by_uuid(self, uuid: str) -> MailAccount | None:
        """The account linked to that Care Identity UUID, or None."""
        ...

    def authenticate(
        self,
        mail: str,
        password: str,
        *,
        before_bind: Callable[[MailAccount | None], None] | None = None,
    ) -> MailAccount:
        """The account, after the directory accepted the password.

        `before_bind` is called between the search and the bind, with the account found
        (None for an unknown address); what it raises stops the bind. A bind that may
        have reached the directory and got no answer raises `BindUnansweredError`: the
        directory may still count it.
        """
        ...

    def check_account(self, account: MailAccount) -> None:
        """Raise the first reason the account may not sign in."""
        ...

    def find_care_identity(self, uuid: str) -> CareIdentity | None:
        """The Care Identity record with that UUID, or None."""
        ...

    def check_care_identity(self, identity: CareIdentity | None) -> CareIdentity:
        """The record, if it exists and is active; else the reason it may not be used."""
        ...

    def accept_aup(self, account: MailAccount, version: str) -> MailAccount:
        """Record that the account accepted that AUP version; the account re-read
        (`AupRecordedButUnreadError` when recorded but the re-read fails)."""
        ...

    def search_accounts(
        self, text: str, org_codes: Iterable[str], limit: int = 50
    ) -> list[MailAccount]:
        """Accounts of those organisations whose name, mail or UUID contains the text."""
        ...

    def ping(self) -> bool:
        """Whether the directory answers now (for /readyz); never raises."""
        ...
