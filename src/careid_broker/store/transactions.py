"""Login transactions: a browser's OIDC authorization request while the user signs in.

The transaction id travels in the browser's cookie; only its SHA-256 is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, delete, update

from careid_broker.store._sql import columns_of, insert_new, row_where, table_of
from careid_broker.store.base import new_secret, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import LoginTransaction
from careid_broker.store.prepared import Prepared


class TransactionStatus(StrEnum):
    """Where a login transaction stands."""

    PENDING = "pending"
    COMPLETED = "completed"
    EXPIRED = "expired"


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthorizationRequest:
    """The validated OIDC authorization request being served."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    prompt: str | None = None
    max_age: int | None = None
    acr_values: str | None = None
    # UI hints that change nothing about security: login_hint, ui_locales, display…
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class LoginTransactionRecord:
    """A stored login transaction; `status` already accounts for expiry."""

    request: AuthorizationRequest
    created_at: datetime
    expires_at: datetime
    status: TransactionStatus
    completed_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewLoginTransaction:
    """A created transaction: `transaction_id` goes in the cookie, nowhere else."""

    transaction_id: str
    record: LoginTransactionRecord


def _record(row: LoginTransaction | Row[Any], now: datetime) -> LoginTransactionRecord:
    status = TransactionStatus(row.status)
    if status is TransactionStatus.PENDING and row.expires_at <= now:
        status = TransactionStatus.EXPIRED
    return LoginTransactionRecord(
        request=AuthorizationRequest(
            client_id=row.client_id,
            redirect_uri=row.redirect_uri,
            scope=row.scope,
            state=row.state,
            nonce=row.nonce,
            code_challenge=row.code_challenge,
            code_challenge_method=row.code_challenge_method,
            prompt=row.prompt,
            max_age=row.max_age,
            acr_values=row.acr_values,
            extras=dict(row.extras),
        ),
        created_at=row.created_at,
        expires_at=row.expires_at,
        status=status,
        completed_at=row.completed_at,
    )


_TABLE = table_of(LoginTransaction)
# Pending and unexpired → completed, returning the row: one statement, compiled once
# (every sign-in for an RP runs it).
_COMPLETE = Prepared(
    update(_TABLE)
    .where(
        _TABLE.c.id_hash == bindparam("hash"),
        _TABLE.c.status == TransactionStatus.PENDING.value,
        _TABLE.c.expires_at > bindparam("now"),
    )
    .values(status=TransactionStatus.COMPLETED.value, completed_at=bindparam("now"))
    .returning(*columns_of(LoginTransaction))
)


class LoginTransactions:
    """Create, read, complete (once) and expire login transactions."""

    def __init__(self, store: Store, *, ttl: timedelta = timedelta(minutes=15)) -> None:
        self._store = store
        self._ttl = ttl

    def create(self, request: AuthorizationRequest) -> NewLoginTransaction:
        """Store a new pending transaction and return its (secret) id."""
        transaction_id = new_secret()
        now = self._store.now()
        row = LoginTransaction(
            id_hash=sha256_hex(transaction_id),
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            state=request.state,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            prompt=request.prompt,
            max_age=request.max_age,
            acr_values=request.acr_values,
            extras=dict(request.extras),
            created_at=now,
            expires_at=now + self._ttl,
            status=TransactionStatus.PENDING.value,
            completed_at=None,
        )
        with self._store.transaction() as session:
            insert_new(session, row)
            return NewLoginTransaction(transaction_id=transaction_id, record=_record(row, now))

    def get(self, transaction_id: str) -> LoginTransactionRecord | None:
        """The transaction behind a cookie value, or None if unknown."""
        with self._store.session() as session:
            row = row_where(session, LoginTransaction, "id_hash", sha256_hex(transaction_id))
            return _record(row, self._store.now()) if row else None

    def complete(self, transaction_id: str) -> LoginTransactionRecord | None:
        """Mark a pending, unexpired transaction completed; None if it was not.

        Single use: of two requests completing one transaction (a double-clicked
        button, two instances), exactly one gets the record and issues a code.
        """
        now = self._store.now()
        with self._store.transaction() as session:
            row = _COMPLETE.one_or_none(session, {"hash": sha256_hex(transaction_id), "now": now})
            return _record(row, now) if row else None

    def expire(self, transaction_id: str) -> bool:
        """End a pending transaction early (cancelled, or failed for good)."""
        with self._store.transaction() as session:
            result = session.execute(
                update(LoginTransaction)
                .where(
                    LoginTransaction.id_hash == sha256_hex(transaction_id),
                    LoginTransaction.status == TransactionStatus.PENDING.value,
                )
                .values(status=TransactionStatus.EXPIRED.value),
                execution_options={"synchronize_session": False},
            )
            return bool(getattr(result, "rowcount", 0))

    def purge(self, *, older_than: timedelta = timedelta(days=1)) -> int:
        """Delete transactions (and their challenges) that expired long ago."""
        cutoff = self._store.now() - older_than
        with self._store.transaction() as session:
            result = session.execute(
                delete(LoginTransaction).where(LoginTransaction.expires_at < cutoff),
                execution_options={"synchronize_session": False},
            )
            return int(getattr(result, "rowcount", 0))
