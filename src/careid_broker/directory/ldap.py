"""The directory adapter over LDAP (ldap3): accounts, password sign-in, Care Identities.

Searches run as the broker's service account; a password is checked by a simple bind
as the user on a connection used for such binds alone (`connector`). Every filter value
is escaped (`filters`), every failure to get an answer is `DirectoryUnavailableError`
(`BindUnansweredError` for a password bind that may have reached the directory), and
the next call simply tries again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime

from ldap3 import MODIFY_REPLACE, Connection

from careid_broker.directory import filters, policy
from careid_broker.directory.acceptance import read_back
from careid_broker.directory.config import DirectoryConfig
from careid_broker.directory.connector import (
    BindAccount,
    BindRole,
    Connector,
    Entry,
    SearchResult,
    ServerFault,
)
from careid_broker.directory.lookups import (
    MAX_MAIL_LENGTH,
    MAX_SEARCH_TEXT,
    MAX_UUID_LENGTH,
    lookup_value,
    password_bytes,
)
from careid_broker.directory.models import CareIdentity, MailAccount
from careid_broker.directory.pool import UNOBSERVED, PoolObserver
from careid_broker.directory.reading import read_account, read_care_identity
from careid_broker.directory.values import format_time
from careid_broker.errors import (
    BrokerError,
    DirectoryDataError,
    DirectoryReadOnlyError,
    InvalidCredentialsError,
)

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LdapDirectory:
    """The `Directory` the broker uses in production, over one or more LDAP servers."""

    def __init__(
        self,
        config: DirectoryConfig,
        *,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        observer: PoolObserver = UNOBSERVED,
    ) -> None:
        self._config = config
        self._clock = clock
        self._connector = Connector(config, monotonic=monotonic, observer=observer)
        self._observer = observer
        self._service = BindAccount(
            role=BindRole.SERVICE, dn=config.bind_dn, password=config.bind_password.encode()
        )
        self._writer = BindAccount(
            role=BindRole.WRITER,
            dn=config.write_bind_dn or config.bind_dn,
            password=(config.write_bind_password or config.bind_password).encode(),
        )

    @property
    def config(self) -> DirectoryConfig:
        """The settings this adapter was built with."""
        return self._config

    @property
    def current_aup_version(self) -> str:
        """The acceptable use policy version users must have accepted."""
        return self._config.current_aup_version

    # Mail accounts.

    def find_account(self, mail: str) -> MailAccount | None:
        """The account with exactly that mail address (case-insensitive), or None."""
        value = lookup_value(mail, MAX_MAIL_LENGTH)
        if value is None:
            return None
        return self._find_one_account(self._config.mapping.accounts.mail, value)

    def find_account_by_uuid(self, uuid: str) -> MailAccount | None:
        """The account linked to that Care Identity UUID, or None."""
        value = lookup_value(uuid, MAX_UUID_LENGTH)
        if value is None:
            return None
        return self._find_one_account(self._config.mapping.accounts.care_identity_uuid, value)

    def _find_one_account(self, attribute: str, value: str) -> MailAccount | None:
        mapping = self._config.mapping.accounts
        search_filter = filters.all_of(
            filters.equals("objectClass", mapping.object_class),
            filters.equals(attribute, value),
        )
        entry = self._search_one(
            self._config.accounts_base,
            search_filter,
            mapping.attributes(),
            binary=mapping.binary_attributes(),
        )
        return read_account(entry, mapping) if entry is not None else None

    def _search_one(
        self,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        binary: frozenset[str] = frozenset(),
    ) -> Entry | None:
        """The single entry matching, None for no match; two matches are a data fault."""

        def operation(connection: Connection) -> SearchResult:
            # Size limit 2: enough to see that a value meant to be unique is not.
            return self._connector.search(
                connection,
                base=base,
                search_filter=search_filter,
                attributes=attributes,
                size_limit=2,
                binary=binary,
            )

        found = self._connector.run(self._service, operation)
        if len(found.entries) > 1 or found.truncated:
            raise DirectoryDataError(detail=f"more than one entry matches {search_filter}")
        return found.entries[0] if found.entries else None

    def authenticate(
        self,
        mail: str,
        password: str,
        *,
        before_bind: Callable[[MailAccount | None], None] | None = None,
    ) -> MailAccount:
        """The account, once the directory has accepted its password.

        Unknown address and wrong password give the same `InvalidCredentialsError`. An
        empty password is refused here, before any bind: a simple bind with a name and
        no password is an "unauthenticated" bind (RFC 4513 §5.1.2), which some servers
        answer with success without checking anything. `before_bind` is called once the
        search has answered, with the account found or None, before either bind: the
        sign-in books the attempt against the entry there. A bind that may have reached
        the directory and got no answer is `BindUnansweredError`, never sent again. The
        caller still applies `check_account`.
        """
        secret = password_bytes(password)
        account = self.find_account(mail)
        if before_bind is not None:
            before_bind(account)
        if account is None:
            # Bind anyway, as a name no entry has: an unknown address then costs the same
            # round trips as a wrong password, so answer times do not tell a stranger
            # which addresses are real. The server answers invalidCredentials.
            nobody = (
                f"uid=careid-no-such-person-{secrets.token_hex(8)},{self._config.accounts_base}"
            )
            try:
                self._connector.run(
                    BindAccount(role=BindRole.USER, dn=nobody, password=secret),
                    lambda _connection: None,
                )
            except InvalidCredentialsError:
                pass
            raise InvalidCredentialsError(detail="no account has that mail address")
        user = BindAccount(role=BindRole.USER, dn=account.dn, password=secret)
        self._connector.run(user, lambda _connection: None)
        return account

    def check_account(self, account: MailAccount) -> None:
        """Raise the first reason the account may not sign in (see `policy`)."""
        policy.check_account(
            account, now=self._clock(), current_aup_version=self._config.current_aup_version
        )

    def accept_aup(self, account: MailAccount, version: str) -> MailAccount:
        """Record acceptance of that AUP version now; the account as re-read afterwards."""
        if not self._config.writable:
            raise DirectoryReadOnlyError(detail="directory.writable is false")
        version = version.strip()
        if not version:
            raise ValueError("an AUP version is required")
        mapping = self._config.mapping.accounts
        now = self._clock()
        changes: dict[str, list[tuple[str, list[str]]]] = {
            mapping.aup_version: [(MODIFY_REPLACE, [version])]
        }
        if mapping.aup_time:
            stamp = format_time(now, mapping.aup_time_format)
            changes[mapping.aup_time] = [(MODIFY_REPLACE, [stamp])]

        def operation(connection: Connection) -> None:
            self._observer.request_sent("modify")
            connection.modify(account.dn, changes)
            result = connection.result or {}
            if result.get("result") != 0:
                raise ServerFault(
                    f"recording AUP acceptance on {account.dn} failed:"
                    f" {result.get('result')} {result.get('description')}"
                )

        self._connector.run(self._writer, operation)
        log.info("recorded AUP %s acceptance for %s", version, account.dn)
        # From here the acceptance is in force, whatever reading it back does.
        recorded = replace(
            account, aup_version=version, aup_accepted_at=now if mapping.aup_time else None
        )
        return read_back(self.find_account, recorded)

    def search_accounts(
        self, text: str, org_codes: Iterable[str], limit: int = 50
    ) -> list[MailAccount]:
        """Accounts of those organisations whose mail, name or UUID contains `text`.

        For local administrators: no organisations, no results. Empty text lists the
        organisations' accounts. At most `limit` (capped by `search_limit`), sorted by
        name.
        """
        mapping = self._config.mapping.accounts
        orgs = sorted({code.strip() for code in org_codes if code and code.strip()})
        if not orgs:
            return []
        if mapping.org_code is None:
            log.warning("account search refused: the mapping names no organisation attribute")
            return []
        text = text.strip()[:MAX_SEARCH_TEXT]
        if text and lookup_value(text, MAX_SEARCH_TEXT) is None:
            return []
        limit = max(1, min(limit, self._config.search_limit))
        parts = [
            filters.equals("objectClass", mapping.object_class),
            filters.any_of(filters.equals(mapping.org_code, code) for code in orgs),
        ]
        if text:
            searched = (
                mapping.mail,
                mapping.display_name,
                mapping.given_name,
                mapping.surname,
                mapping.care_identity_uuid,
            )
            parts.append(filters.any_of(filters.contains(a, text) for a in searched if a))
        search_filter = filters.all_of(*parts)

        def operation(connection: Connection) -> list[Entry]:
            return self._connector.search(
                connection,
                base=self._config.accounts_base,
                search_filter=search_filter,
                attributes=mapping.attributes(),
                size_limit=limit,
                binary=mapping.binary_attributes(),
            ).entries

        accounts = [read_account(e, mapping) for e in self._connector.run(self._service, operation)]
        # The filter already scopes by organisation; checking again costs nothing and
        # keeps an administrator inside their organisations even if the filter did not.
        wanted = {code.casefold() for code in orgs}
        scoped = [a for a in accounts if (a.org_code or "").casefold() in wanted]
        scoped.sort(key=lambda a: (a.display_name.casefold(), a.mail.casefold()))
        return scoped[:limit]

    # Care Identity records.

    def find_care_identity(self, uuid: str) -> CareIdentity | None:
        """The Care Identity record with that UUID, or None."""
        value = lookup_value(uuid, MAX_UUID_LENGTH)
        if value is None:
            return None
        mapping = self._config.mapping.care_identities
        search_filter = filters.all_of(
            filters.equals("objectClass", mapping.object_class),
            filters.equals(mapping.uuid, value),
        )
        entry = self._search_one(
            self._config.care_identities_base, search_filter, mapping.attributes()
        )
        return read_care_identity(entry, mapping) if entry is not None else None

    def check_care_identity(self, identity: CareIdentity | None) -> CareIdentity:
        """The record, if it exists and is active; else the reason it may not be used."""
        return policy.check_care_identity(identity)

    def close(self) -> None:
        """Close the connections kept open between operations (at shutdown)."""
        self._connector.close()

    # Health.

    def ping(self) -> bool:
        """Whether the directory answers the service account now; never raises."""

        def operation(connection: Connection) -> None:
            self._connector.search(
                connection,
                base=self._config.accounts_base,
                search_filter="(objectClass=*)",
                attributes=[],
                size_limit=1,
                base_only=True,
            )

        try:
            self._connector.run(self._service, operation)
        except BrokerError:
            return False
        return True
