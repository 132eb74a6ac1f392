"""Stable opaque OIDC subject identifiers, one per directory account."""

from __future__ import annotations

import secrets

from sqlalchemy import bindparam, select, update

from careid_broker.store._sql import insert_ignore, table_of
from careid_broker.store.engine import Store
from careid_broker.store.models import Subject
from careid_broker.store.prepared import Prepared

# 16 random bytes → 22 URL-safe characters (128 bits): unguessable, and carries nothing
# about the person, unlike an email address that RPs would start to rely on.
_SUB_BYTES = 16
_SUBJECTS = table_of(Subject).c
# Built once: every sign-in reads its account's row (inside its write transaction).
_EXISTING = Prepared(
    select(_SUBJECTS.sub, _SUBJECTS.account_dn).where(_SUBJECTS.account_mail == bindparam("mail"))
)


def normalise_mail(mail: str) -> str:
    """The form accounts are keyed by: trimmed, lower-cased."""
    return mail.strip().lower()


class Subjects:
    """`sub` values: created on first sight of an account, never reassigned."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def sub_for_account(self, *, mail: str, dn: str) -> str:
        """The account's `sub`, creating it the first time (safe against races).

        Keyed by the lower-cased mail, which survives directory moves and renames;
        the DN is kept up to date beside it so administrators can find the entry.
        """
        key = normalise_mail(mail)
        if not key:
            raise ValueError("an account mail address is required")
        with self._store.transaction() as session:
            # Read first: every sign-in but an account's first finds its row.
            row = _EXISTING.one_or_none(session, {"mail": key})
            if row is None:
                insert_ignore(
                    session,
                    Subject,
                    {
                        "sub": secrets.token_urlsafe(_SUB_BYTES),
                        "account_mail": key,
                        "account_dn": dn,
                        "created_at": self._store.now(),
                    },
                    ["account_mail"],
                )
                # Ours, or the one a racing instance inserted first.
                row = _EXISTING.one(session, {"mail": key})
            if row.account_dn != dn:
                session.execute(
                    update(Subject).where(Subject.account_mail == key).values(account_dn=dn)
                )
            return str(row.sub)

    def find_sub(self, mail: str) -> str | None:
        """The `sub` already given to an account, or None (never creates one)."""
        with self._store.session() as session:
            return session.scalar(
                select(Subject.sub).where(Subject.account_mail == normalise_mail(mail))
            )

    def account_for_sub(self, sub: str) -> str | None:
        """The account mail behind a `sub` (for userinfo and logout), or None."""
        with self._store.session() as session:
            return session.scalar(select(Subject.account_mail).where(Subject.sub == sub))
