"""Stable opaque OIDC subject identifiers, one per directory account."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update

from careid_broker.store._sql import insert_ignore, table_of
from careid_broker.store.engine import Store
from careid_broker.store.models import Subject
from careid_broker.store.prepared import Prepared

# 16 random bytes → 22 URL-safe characters (128 bits): unguessable, and carries nothing
# about the person, unlike an email address that RPs would start to rely on.
_SUB_BYTES = 16
_SUBJECTS = table_of(Subject).c
_CURRENT = "retired_at IS NULL"
# Built once: every sign-in reads its account's row (inside its write transaction).
_EXISTING = Prepared(
    select(_SUBJECTS.sub, _SUBJECTS.account_dn, _SUBJECTS.account_entry_id).where(
        _SUBJECTS.account_mail == bindparam("mail"), _SUBJECTS.retired_at.is_(None)
    )
)

# Read at single sign-on and every refresh: is the session's `sub` still its holder's?
_HELD = Prepared(
    select(_SUBJECTS.account_entry_id, _SUBJECTS.retired_at).where(
        _SUBJECTS.sub == bindparam("sub")
    )
)


def normalise_mail(mail: str) -> str:
    """The form accounts are keyed by: trimmed, lower-cased."""
    return mail.strip().lower()


@dataclass(frozen=True, kw_only=True)
class SubjectRow:
    """A current `sub` as kept: its address and the DN it was last seen at."""

    sub: str
    account_mail: str
    account_dn: str


@dataclass(frozen=True, kw_only=True)
class SubjectHolder:
    """The entry a `sub` belongs to, as far as the broker kept it."""

    entry_id: str | None
    retired: bool


@dataclass(frozen=True, kw_only=True)
class AccountSubject:
    """An account's `sub`, and the one it replaced if its address had been another
    entry's (for the caller to audit)."""

    sub: str
    replaced_sub: str | None = None


class Subjects:
    """`sub` values: created on first sight of an account, never reassigned."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def sub_for_account(self, *, mail: str, dn: str, entry_id: str | None = None) -> str:
        """The account's `sub`, creating it the first time (see `subject_for_account`)."""
        return self.subject_for_account(mail=mail, dn=dn, entry_id=entry_id).sub

    def subject_for_account(
        self, *, mail: str, dn: str, entry_id: str | None = None
    ) -> AccountSubject:
        """The account's `sub`, creating it the first time (safe against races).

        Keyed by the lower-cased mail, which survives directory moves and renames; the
        DN is kept up to date beside it so administrators can find the entry. The
        entry's immutable identifier (`entry_id`), when the directory gives one, tells
        an address given to a new entry from the same entry renamed: the new entry gets
        a new `sub` and the old one is retired (OIDC Core §2: never reassigned). A row
        kept without one takes the entry's; with none given, the mail alone decides.
        """
        key = normalise_mail(mail)
        if not key:
            raise ValueError("an account mail address is required")
        with self._store.transaction() as session:
            # Read first: every sign-in but an account's first finds its row.
            row = _EXISTING.one_or_none(session, {"mail": key})
            replaced: str | None = None
            if (
                row is not None
                and entry_id is not None
                and row.account_entry_id is not None
                and row.account_entry_id != entry_id
            ):
                replaced = str(row.sub)
                session.execute(
                    update(Subject)
                    .where(Subject.sub == replaced)
                    .values(retired_at=self._store.now())
                )
                row = None
            if row is None:
                insert_ignore(
                    session,
                    Subject,
                    {
                        "sub": secrets.token_urlsafe(_SUB_BYTES),
                        "account_mail": key,
                        "account_dn": dn,
                        "account_entry_id": entry_id,
                        "created_at": self._store.now(),
                    },
                    ["account_mail"],
                    conflict_where=_CURRENT,
                )
                # Ours, or the one a racing instance inserted first.
                row = _EXISTING.one(session, {"mail": key})
            changes: dict[str, str] = {}
            if row.account_dn != dn:
                changes["account_dn"] = dn
            if entry_id is not None and row.account_entry_id is None:
                changes["account_entry_id"] = entry_id
            if changes:
                session.execute(update(Subject).where(Subject.sub == row.sub).values(**changes))
            return AccountSubject(sub=str(row.sub), replaced_sub=replaced)

    def without_entry_id(self, *, after: str | None = None, limit: int = 500) -> list[SubjectRow]:
        """Current `sub`s that keep no entry identifier yet (made before revision 0013,
        or under a mapping without `entry_id`), by `sub`, the page after `after`."""
        query = select(_SUBJECTS.sub, _SUBJECTS.account_mail, _SUBJECTS.account_dn).where(
            _SUBJECTS.account_entry_id.is_(None), _SUBJECTS.retired_at.is_(None)
        )
        if after is not None:
            query = query.where(_SUBJECTS.sub > after)
        with self._store.session() as session:
            rows = session.execute(query.order_by(_SUBJECTS.sub).limit(limit)).all()
        return [
            SubjectRow(
                sub=str(r.sub), account_mail=str(r.account_mail), account_dn=str(r.account_dn)
            )
            for r in rows
        ]

    def record_entry_id(self, row: SubjectRow, entry_id: str) -> bool:
        """Keep `entry_id` with a `sub` that has none, if it is still current and still
        at the DN it was read with (a sign-in meanwhile decides instead); True if kept."""
        return self._update_unlinked(row, account_entry_id=entry_id)

    def retire(self, row: SubjectRow) -> bool:
        """Retire a `sub` that keeps no entry identifier (still current, still at the DN
        it was read with): whoever holds its address next gets a new one. True if done."""
        return self._update_unlinked(row, retired_at=self._store.now())

    def _update_unlinked(self, row: SubjectRow, **values: Any) -> bool:
        with self._store.transaction() as session:
            done = session.execute(
                update(Subject)
                .where(
                    Subject.sub == row.sub,
                    Subject.account_dn == row.account_dn,
                    Subject.account_entry_id.is_(None),
                    Subject.retired_at.is_(None),
                )
                .values(**values)
            )
            return int(getattr(done, "rowcount", 0)) == 1

    def find_sub(self, mail: str) -> str | None:
        """The `sub` an account holds now, or None (never creates one)."""
        with self._store.session() as session:
            return session.scalar(
                select(Subject.sub).where(
                    Subject.account_mail == normalise_mail(mail), Subject.retired_at.is_(None)
                )
            )

    def holder_of(self, sub: str) -> SubjectHolder | None:
        """What a `sub` says of the entry that holds it: that entry's identifier, if
        kept, and whether the `sub` is retired (its address given to another entry);
        None for a `sub` never made."""
        with self._store.session() as session:
            row = _HELD.one_or_none(session, {"sub": sub})
        if row is None:
            return None
        entry_id, retired_at = row
        return SubjectHolder(entry_id=entry_id, retired=retired_at is not None)

    def account_for_sub(self, sub: str) -> str | None:
        """The account mail behind a `sub` (for audit of logout deliveries), or None;
        a retired `sub` still names the address its holder had."""
        with self._store.session() as session:
            return session.scalar(select(Subject.account_mail).where(Subject.sub == sub))
