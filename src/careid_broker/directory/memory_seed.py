"""Seed records for `MemoryDirectory`, and a reader for the LDIF that seeds the demo slapd.

TEST MATERIAL: this is how the in-process tests get the same people the slapd-based tests
get (config/ldap/demo.ldif), read through the same attribute mapping and `reading`
functions as `LdapDirectory` reads search results, so a difference in what the two
directories say is a difference in behaviour, not in data.

The LDIF reader handles the subset seed files use (RFC 2849 content records): comments,
folded lines, `attr: value`, base64 `attr:: value`, attribute options (dropped). It
refuses change records and `attr:< URL` values rather than misread them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum, unique
from pathlib import Path

from careid_broker.directory.connector import Entry
from careid_broker.directory.mapping import AttributeMapping
from careid_broker.directory.models import CareIdentity, MailAccount
from careid_broker.directory.reading import read_account, read_care_identity
from careid_broker.settings import is_attribute_name

# The demo directory's default password policy: olcPPolicyDefault in
# config/ldap/slapd-config.ldif.in. Entries without a pwdPolicySubentry get this one.
DEMO_PASSWORD_POLICY_DN = "cn=default,ou=policies,dc=nhs,dc=example"  # noqa: S105 - a DN

_SSHA_PREFIX = "{SSHA}"
_SHA1_LENGTH = 20
_SALT_BYTES = 16
_SCRYPT_LENGTH = 32


@unique
class HashScheme(StrEnum):
    """How a stored password hash was made."""

    SCRYPT = "scrypt"
    # OpenLDAP's salted SHA-1, kept only as read from a seed file: the seed holds no
    # plain password to hash afresh, and slapd checks exactly this value.
    SSHA = "ssha"


def _scrypt(secret: bytes, salt: bytes, log2_n: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        secret, salt=salt, n=n, r=8, p=1, maxmem=256 * 8 * n + (1 << 20), dklen=_SCRYPT_LENGTH
    )


@dataclass(frozen=True, kw_only=True)
class PasswordHash:
    """A salted password hash (never the password): scrypt, or a seed's {SSHA} value."""

    scheme: HashScheme
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    log2_n: int = 14  # scrypt's cost; unused for {SSHA}

    @classmethod
    def of(cls, password: str, *, log2_n: int = 14) -> PasswordHash:
        """A scrypt hash of the password with a fresh salt (lower `log2_n` for fast tests)."""
        if not 10 <= log2_n <= 20:
            raise ValueError("log2_n must be between 10 and 20")
        salt = secrets.token_bytes(_SALT_BYTES)
        digest = _scrypt(password.encode("utf-8"), salt, log2_n)
        return cls(scheme=HashScheme.SCRYPT, salt=salt, digest=digest, log2_n=log2_n)

    @classmethod
    def from_user_password(cls, value: str) -> PasswordHash:
        """From a userPassword value: "{SSHA}…" as it is; a plain-text value hashed now."""
        if not value.startswith("{"):
            # slapd would compare a plain value as it is; storing it so would not do.
            return cls.of(value)
        if not value.upper().startswith(_SSHA_PREFIX):
            scheme = value.partition("}")[0] + "}"
            raise ValueError(f"unsupported userPassword scheme {scheme}")
        try:
            raw = base64.b64decode(value[len(_SSHA_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("malformed {SSHA} userPassword") from None
        if len(raw) <= _SHA1_LENGTH:
            raise ValueError("malformed {SSHA} userPassword: no salt")
        return cls(scheme=HashScheme.SSHA, salt=raw[_SHA1_LENGTH:], digest=raw[:_SHA1_LENGTH])

    def verify(self, password: bytes) -> bool:
        """Whether these exact bytes are the password (a constant-time comparison)."""
        if self.scheme is HashScheme.SCRYPT:
            candidate = _scrypt(password, self.salt, self.log2_n)
        else:
            candidate = hashlib.sha1(password + self.salt).digest()  # noqa: S324 - {SSHA}
        return hmac.compare_digest(candidate, self.digest)


@dataclass(frozen=True, kw_only=True)
class LockoutPolicy:
    """The directory's own lockout (OpenLDAP ppolicy; the defaults are the demo's).

    `max_failures` failed binds within `failure_window` lock the account for
    `lock_duration`; a window of None counts failures until a good bind, a duration of
    None locks until the directory is rebuilt (slapd: until an administrator unlocks).
    """

    max_failures: int = 5
    failure_window: timedelta | None = timedelta(seconds=900)
    lock_duration: timedelta | None = timedelta(seconds=900)

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1 (no lockout: use None)")


DEMO_LOCKOUT = LockoutPolicy()


@dataclass(frozen=True, kw_only=True)
class AccountRecord:
    """A mail account as the memory directory holds it, with what a bind checks."""

    account: MailAccount
    password: PasswordHash | None = None  # None: every bind as the account is refused
    # Further values of a multi-valued mail attribute: LDAP finds the entry by any.
    other_mails: tuple[str, ...] = ()
    lockout: LockoutPolicy | None = DEMO_LOCKOUT
    # ppolicy pwdReset under pwdMustChange: the right password only allows a change.
    must_change_password: bool = False


@dataclass(frozen=True, kw_only=True)
class MemorySeed:
    """What a seed file holds for the memory directory, in file (slapadd) order."""

    accounts: tuple[AccountRecord, ...]
    care_identities: tuple[CareIdentity, ...]


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, unfolded line), comments dropped; blank lines kept as ""."""
    current: tuple[int, str] | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.startswith(" ") and current is not None:
            current = (current[0], current[1] + line[1:])  # RFC 2849: a fold drops one space
            continue
        if current is not None and not current[1].startswith("#"):
            yield current
        current = (number, line)
    if current is not None and not current[1].startswith("#"):
        yield current


def _attribute_value(number: int, line: str) -> tuple[str, str]:
    name, colon, rest = line.partition(":")
    base_name = name.split(";", 1)[0]
    if not colon or not is_attribute_name(base_name):
        raise ValueError(f"line {number}: not an 'attribute: value' line")
    if rest.startswith(":"):
        try:
            return base_name.casefold(), base64.b64decode(rest[1:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"line {number}: malformed base64 or not UTF-8") from None
    if rest.startswith("<"):
        raise ValueError(f"line {number}: URL values are not supported")
    return base_name.casefold(), rest.lstrip(" ")


def parse_ldif(text: str) -> list[Entry]:
    """The entries of LDIF content records, attribute names folded as search results are."""
    entries: list[Entry] = []
    dn: str | None = None
    values: dict[str, list[str]] = {}
    for number, line in _logical_lines(text):
        if not line:
            if dn is not None:
                entries.append(Entry(dn=dn, values=values))
                dn, values = None, {}
            continue
        name, value = _attribute_value(number, line)
        if dn is None:
            if name == "version" and not entries:
                continue
            if name != "dn":
                raise ValueError(f"line {number}: a record must start with dn:")
            dn = value
        elif name == "changetype":
            raise ValueError(f"line {number}: change records are not supported")
        else:
            values.setdefault(name, []).append(value)
    if dn is not None:
        entries.append(Entry(dn=dn, values=values))
    return entries


def _has_class(entry: Entry, object_class: str) -> bool:
    wanted = object_class.casefold()
    return any(value.strip().casefold() == wanted for value in entry.get("objectClass"))


def _flag(entry: Entry, attribute: str) -> bool:
    return (entry.first(attribute) or "").upper() == "TRUE"


def _seconds(entry: Entry, attribute: str) -> timedelta | None:
    """A ppolicy duration; 0 (or absent) means "no limit", as ppolicy reads it."""
    text = entry.first(attribute) or "0"
    if not text.isdigit():
        raise ValueError(f"{entry.dn}: {attribute} is not a number of seconds")
    return timedelta(seconds=int(text)) if int(text) else None


def _lockout(policy: Entry | None) -> LockoutPolicy | None:
    """The lockout a pwdPolicy entry sets; None when it locks nothing out."""
    if policy is None or not _flag(policy, "pwdLockout"):
        return None
    max_failures = policy.first("pwdMaxFailure") or "0"
    if not max_failures.isdigit():
        raise ValueError(f"{policy.dn}: pwdMaxFailure is not a number")
    if int(max_failures) < 1:
        return None  # ppolicy locks nothing out without a maximum
    return LockoutPolicy(
        max_failures=int(max_failures),
        failure_window=_seconds(policy, "pwdFailureCountInterval"),
        lock_duration=_seconds(policy, "pwdLockoutDuration"),
    )


def _account_record(entry: Entry, mapping: AttributeMapping, policy: Entry | None) -> AccountRecord:
    user_password = entry.first("userPassword")
    try:
        password = PasswordHash.from_user_password(user_password) if user_password else None
    except ValueError as exc:
        raise ValueError(f"{entry.dn}: {exc}") from None
    mails = [value.strip() for value in entry.get(mapping.accounts.mail) if value.strip()]
    account = read_account(entry, mapping.accounts)
    if account.entry_id is None and mapping.accounts.entry_id:
        # slapadd gives every entry an entryUUID the seed does not spell out. Made from
        # the DN, so that the same seed loaded again (a broker restarted) is the same
        # directory, as one that keeps its entries would be: its sessions and `sub`s go on.
        account = replace(account, entry_id=str(uuid.uuid5(uuid.NAMESPACE_X500, entry.dn)))
    return AccountRecord(
        account=account,
        password=password,
        other_mails=tuple(mails[1:]),
        lockout=_lockout(policy),
        must_change_password=policy is not None
        and _flag(policy, "pwdMustChange")
        and _flag(entry, "pwdReset"),
    )


def seed_from_entries(
    entries: Sequence[Entry],
    *,
    mapping: AttributeMapping | None = None,
    password_policy_dn: str = DEMO_PASSWORD_POLICY_DN,
) -> MemorySeed:
    """Mail accounts and Care Identity records from entries, through the mapping."""
    mapping = mapping or AttributeMapping()
    policies = {e.dn.casefold(): e for e in entries if _has_class(e, "pwdPolicy")}
    default_policy = policies.get(password_policy_dn.casefold())
    accounts: list[AccountRecord] = []
    identities: list[CareIdentity] = []
    for entry in entries:
        if _has_class(entry, mapping.care_identities.object_class):
            identities.append(read_care_identity(entry, mapping.care_identities))
        if _has_class(entry, mapping.accounts.object_class):
            # ppolicy: the entry's own policy, else the default (also for a dangling name).
            named = entry.first("pwdPolicySubentry")
            policy = policies.get(named.casefold()) if named else None
            accounts.append(_account_record(entry, mapping, policy or default_policy))
    return MemorySeed(accounts=tuple(accounts), care_identities=tuple(identities))


def load_ldif_seed(
    path: Path,
    *,
    mapping: AttributeMapping | None = None,
    password_policy_dn: str = DEMO_PASSWORD_POLICY_DN,
) -> MemorySeed:
    """The seed in an LDIF file (config/ldap/demo.ldif for the demo people)."""
    entries = parse_ldif(path.read_text(encoding="utf-8"))
    return seed_from_entries(entries, mapping=mapping, password_policy_dn=password_policy_dn)
