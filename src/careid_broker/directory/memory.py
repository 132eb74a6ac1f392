"""A `Directory` held in memory that answers as `LdapDirectory` over the demo slapd does.

TEST MATERIAL, for the broker's in-process tests: nothing in the broker's configuration
builds one. tests/directory/test_memory_directory.py runs the same assertions against
this and against `LdapDirectory` on slapd, and compares their answers side by side.

What callers see is the LDAP adapter's: lookups are cleaned by the adapter's own
`lookup_value` and limits; values match as OpenLDAP's matching rules compare them
(`_ia5_key`, `_string_key`); account and Care Identity checks are `policy`'s; a
password is refused before any "bind" exactly where the adapter refuses it; and the
operations that never reach a server (check_account, check_care_identity, an empty
password, a read-only accept_aup) behave the same while the directory is "down".

The password lockout models the demo's ppolicy (config/ldap/demo.ldif: five failed
binds within 15 minutes lock for 15 minutes, on the injected clock): a locked account
refuses every bind, right password or not, and binds refused while locked are not
counted; the lock is stamped to the second, as pwdAccountLockedTime is; a good bind
clears the count. One simplification: when a lock runs out the count starts afresh,
where ppolicy keeps failures still inside the window (with the demo's equal window and
duration that differs only within the second the lock ends).
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from careid_broker.directory import policy
from careid_broker.directory.acceptance import read_back
from careid_broker.directory.lookups import (
    MAX_MAIL_LENGTH,
    MAX_SEARCH_TEXT,
    MAX_UUID_LENGTH,
    lookup_value,
    password_bytes,
)
from careid_broker.directory.mapping import AttributeMapping
from careid_broker.directory.memory_seed import (
    DEMO_PASSWORD_POLICY_DN,
    AccountRecord,
    LockoutPolicy,
    load_ldif_seed,
)
from careid_broker.directory.models import CareIdentity, MailAccount
from careid_broker.directory.values import format_generalized_time, parse_generalized_time
from careid_broker.errors import (
    AccountLockedError,
    DirectoryDataError,
    DirectoryReadOnlyError,
    DirectoryUnavailableError,
    InvalidCredentialsError,
    PasswordExpiredError,
)

log = logging.getLogger(__name__)

# DirectoryConfig's default and bounds for `search_limit`.
DEFAULT_SEARCH_LIMIT = 100
MAX_SEARCH_LIMIT = 1000


def _ia5_key(text: str | None) -> str | None:
    """A value as caseIgnoreIA5Match compares it; None if it is not IA5 (matches nothing).

    OpenLDAP finds no entry for "Kim.taylor@nhs.net" spelt with a Kelvin sign, though
    Python's casefold would turn it into a "k": so ASCII only, ASCII case folding.
    """
    if text is None or not text.isascii():
        return None
    return " ".join(text.lower().split())


def _string_key(text: str | None) -> str | None:
    """A value as caseIgnoreMatch compares it (approximately: see the comments)."""
    if text is None:
        return None
    # slapd normalises compatibility forms, folds case fully and reads a run of spaces
    # as one: "ｋｉｍ" finds Kim, "straße" finds "STRASSE", "alex  morgan" Alex Morgan.
    # OpenLDAP folds the dotted capital I to a plain "i"; casefold would keep the dot.
    text = unicodedata.normalize("NFKC", text.replace("\u0130", "i"))
    return " ".join(unicodedata.normalize("NFKC", text.casefold()).split())


def _contains(wanted: str | None, values: Iterable[str | None]) -> bool:
    return wanted is not None and any(value is not None and wanted in value for value in values)


@dataclass
class _BindState:
    """An account's ppolicy state (pwdFailureTime, pwdAccountLockedTime)."""

    failures: list[datetime] = field(default_factory=list)
    locked_at: datetime | None = None

    def locked(self, now: datetime, lockout: LockoutPolicy) -> bool:
        if self.locked_at is None:
            return False
        if lockout.lock_duration is None or now < self.locked_at + lockout.lock_duration:
            return True
        self.locked_at = None
        self.failures.clear()  # the simplification in the module docstring
        return False

    def failed(self, now: datetime, lockout: LockoutPolicy) -> None:
        window = lockout.failure_window
        self.failures = [t for t in self.failures if window is None or now - t <= window]
        self.failures.append(now)
        if len(self.failures) >= lockout.max_failures:
            self.locked_at = now.replace(microsecond=0)


class MemoryDirectory:
    """The `Directory` protocol over records in memory (a demo seed, or a test's own)."""

    def __init__(
        self,
        *,
        accounts: Iterable[AccountRecord],
        care_identities: Iterable[CareIdentity] = (),
        clock: Callable[[], datetime],
        current_aup_version: str,
        writable: bool = False,
        search_limit: int = DEFAULT_SEARCH_LIMIT,
    ) -> None:
        if not current_aup_version.strip():
            raise ValueError("current_aup_version is required")
        if not 1 <= search_limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"search_limit must be between 1 and {MAX_SEARCH_LIMIT}")
        self._clock = clock
        self._current_aup_version = current_aup_version
        self._writable = writable
        self._search_limit = search_limit
        # Keyed by DN (compared case-insensitively, as LDAP does); kept in the order
        # given, which is slapadd's, so a size-limited search returns the same entries.
        self._accounts: dict[str, AccountRecord] = {}
        for record in accounts:
            key = record.account.dn.casefold()
            if key in self._accounts:
                raise ValueError(f"two accounts have the DN {record.account.dn}")
            self._accounts[key] = record
        self._identities = tuple(care_identities)
        if len({i.dn.casefold() for i in self._identities}) != len(self._identities):
            raise ValueError("two Care Identity records have the same DN")
        self._binds: dict[str, _BindState] = {}
        self._available = True
        # The broker's test servers run requests on threads; a lockout count must not
        # lose a failure to a race any more than slapd's does.
        self._lock = threading.Lock()

    @classmethod
    def from_ldif(
        cls,
        path: Path,
        *,
        clock: Callable[[], datetime],
        current_aup_version: str,
        writable: bool = False,
        search_limit: int = DEFAULT_SEARCH_LIMIT,
        mapping: AttributeMapping | None = None,
        password_policy_dn: str = DEMO_PASSWORD_POLICY_DN,
    ) -> MemoryDirectory:
        """The people and Care Identities of a seed file (config/ldap/demo.ldif)."""
        seed = load_ldif_seed(path, mapping=mapping, password_policy_dn=password_policy_dn)
        return cls(
            accounts=seed.accounts,
            care_identities=seed.care_identities,
            clock=clock,
            current_aup_version=current_aup_version,
            writable=writable,
            search_limit=search_limit,
        )

    @property
    def current_aup_version(self) -> str:
        """The acceptable use policy version users must have accepted."""
        return self._current_aup_version

    def set_available(self, available: bool) -> None:
        """Take the directory down (False) or bring it back (True), as an outage would."""
        with self._lock:
            self._available = available

    def _reach(self) -> None:
        """Fail as the adapter does when no server answers (call with the lock held)."""
        if not self._available:
            raise DirectoryUnavailableError(detail="the memory directory is set unavailable")

    # Mail accounts.

    def find_account(self, mail: str) -> MailAccount | None:
        """The account with exactly that mail address (case-insensitive), or None."""
        value = lookup_value(mail, MAX_MAIL_LENGTH)
        if value is None:
            return None
        key = _ia5_key(value)
        return self._find_one(
            f"mail={value}",
            lambda record: (
                key is not None
                and key in (_ia5_key(m) for m in (record.account.mail, *record.other_mails))
            ),
        )

    def find_account_by_uuid(self, uuid: str) -> MailAccount | None:
        """The account linked to that Care Identity UUID, or None."""
        value = lookup_value(uuid, MAX_UUID_LENGTH)
        if value is None:
            return None
        key = _ia5_key(value)
        return self._find_one(
            f"careidCareIdentityUuid={value}",
            lambda record: key is not None and key == _ia5_key(record.account.care_identity_uuid),
        )

    def _find_one(self, what: str, matches: Callable[[AccountRecord], bool]) -> MailAccount | None:
        with self._lock:
            self._reach()
            found = [record.account for record in self._accounts.values() if matches(record)]
        if len(found) > 1:
            raise DirectoryDataError(detail=f"more than one entry matches {what}")
        return found[0] if found else None

    def authenticate(
        self,
        mail: str,
        password: str,
        *,
        before_bind: Callable[[MailAccount | None], None] | None = None,
    ) -> MailAccount:
        """The account, once its password was accepted (the adapter's refusals and order,
        `before_bind` included)."""
        secret = password_bytes(password)
        account = self.find_account(mail)
        if before_bind is not None:
            before_bind(account)
        if account is None:
            raise InvalidCredentialsError(detail="no account has that mail address")
        self._bind(account.dn, secret)
        return account

    def _bind(self, dn: str, secret: bytes) -> None:
        """A simple bind as the account, with the password policy slapd applies."""
        key = dn.casefold()
        with self._lock:
            self._reach()
            record = self._accounts.get(key)
            if record is None:
                raise InvalidCredentialsError()  # gone since the search: slapd says 49
            now = self._clock()
            state = self._binds.setdefault(key, _BindState())
            lockout = record.lockout
            if lockout is not None and state.locked(now, lockout):
                raise AccountLockedError()
            if record.password is None or not record.password.verify(secret):
                if lockout is not None:
                    state.failed(now, lockout)
                raise InvalidCredentialsError()
            state.failures.clear()
            if record.must_change_password:
                raise PasswordExpiredError()

    def check_account(self, account: MailAccount) -> None:
        """Raise the first reason the account may not sign in (see `policy`)."""
        policy.check_account(
            account, now=self._clock(), current_aup_version=self._current_aup_version
        )

    def accept_aup(self, account: MailAccount, version: str) -> MailAccount:
        """Record acceptance of that AUP version now; the account as re-read afterwards."""
        if not self._writable:
            raise DirectoryReadOnlyError(detail="directory.writable is false")
        version = version.strip()
        if not version:
            raise ValueError("an AUP version is required")
        # The directory keeps GeneralizedTime to the second; a re-read gives that back.
        accepted_at = parse_generalized_time(format_generalized_time(self._clock()))
        key = account.dn.casefold()
        with self._lock:
            self._reach()
            record = self._accounts.get(key)
            if record is None:
                # slapd answers noSuchObject, which the adapter reports as unavailable.
                raise DirectoryUnavailableError(
                    detail=f"recording AUP acceptance on {account.dn} failed: no such object"
                )
            updated = replace(record.account, aup_version=version, aup_accepted_at=accepted_at)
            self._accounts[key] = replace(record, account=updated)
        log.info("recorded AUP %s acceptance for %s", version, account.dn)
        return read_back(self.find_account, updated)

    def search_accounts(
        self, text: str, org_codes: Iterable[str], limit: int = 50
    ) -> list[MailAccount]:
        """Accounts of those organisations whose mail, name or UUID contains `text`."""
        orgs = sorted({code.strip() for code in org_codes if code and code.strip()})
        if not orgs:
            return []
        text = text.strip()[:MAX_SEARCH_TEXT]
        if text and lookup_value(text, MAX_SEARCH_TEXT) is None:
            return []
        limit = max(1, min(limit, self._search_limit))
        org_keys = {key for key in map(_ia5_key, orgs) if key is not None}
        wanted_ia5, wanted_string = _ia5_key(text), _string_key(text)

        def matches(account: MailAccount, other_mails: tuple[str, ...]) -> bool:
            if _ia5_key(account.org_code) not in org_keys:
                return False
            if not text:
                return True
            ia5 = (account.mail, *other_mails, account.care_identity_uuid)
            names = (account.display_name, account.given_name, account.surname)
            return _contains(wanted_ia5, map(_ia5_key, ia5)) or _contains(
                wanted_string, map(_string_key, names)
            )

        with self._lock:
            self._reach()
            # The server stops at the size limit in entry order; the adapter sorts after.
            found = [
                r.account for r in self._accounts.values() if matches(r.account, r.other_mails)
            ]
        scoped = found[:limit]
        scoped.sort(key=lambda a: (a.display_name.casefold(), a.mail.casefold()))
        return scoped

    # Care Identity records.

    def find_care_identity(self, uuid: str) -> CareIdentity | None:
        """The Care Identity record with that UUID, or None."""
        value = lookup_value(uuid, MAX_UUID_LENGTH)
        if value is None:
            return None
        key = _ia5_key(value)
        with self._lock:
            self._reach()
            found = [i for i in self._identities if key is not None and key == _ia5_key(i.uuid)]
        if len(found) > 1:
            raise DirectoryDataError(detail=f"more than one entry matches careidUuid={value}")
        return found[0] if found else None

    def check_care_identity(self, identity: CareIdentity | None) -> CareIdentity:
        """The record, if it exists and is active; else the reason it may not be used."""
        return policy.check_care_identity(identity)

    # Health.

    def ping(self) -> bool:
        """Whether the directory answers now; never raises."""
        with self._lock:
            return self._available
