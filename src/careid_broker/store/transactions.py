"""Login transactions: a browser's OIDC authorization request while the user signs in.

A relying party's pending transaction is not stored. Its id is the request itself,
sealed (AES-256-GCM under a key of its own, derived from the broker's secret key and a
random salt) with when it was made and when it expires: `/authorize` writes nothing,
and any worker or instance with the same secret key can open it. Only a change of state
is written, as a row keyed by the id's SHA-256: completed (a code was issued, once) or
expired early (cancelled, or failed for good). A transaction is pending while its seal
opens, its time has not run out and no such row exists; `complete` inserts the row only
if none exists yet, so of two requests completing one transaction exactly one wins.

The id travels in the page (`tx`); the browser's session cookie keeps a digest of it
(`web/browser_binding.py`). The request's parameters are bounded (`FIELD_LIMITS`,
checked by `/authorize`), so a sealed id stays short enough for a URL. Broker-local
steps (AUP acceptance, registration), whose ids the cookie keeps whole, are stored rows
from the start (`LoginTransactions(sealed=False)`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, delete, select, update

from careid_broker.store._sql import columns_of, insert_ignore, insert_new, row_where, table_of
from careid_broker.store.base import new_secret, require_aware, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import LoginTransaction
from careid_broker.store.prepared import Prepared

#: The longest sealed id made or accepted: `/login?tx=…` must fit gunicorn's 8190-byte
#: request line. A request whose sealed form is longer is refused at `/authorize`
#: (`TransactionTooLargeError`); with ordinary text in the bounded fields below, it fits.
MAX_TRANSACTION_ID_LENGTH = 8000

#: The longest value `/authorize` keeps for each request parameter (the columns' sizes).
FIELD_LIMITS: Mapping[str, int] = {
    "redirect_uri": 2048,
    "scope": 1024,
    "state": 1024,
    "nonce": 512,
    "code_challenge": 128,
    "code_challenge_method": 16,
    "prompt": 64,
    "acr_values": 255,
}
#: The longest UI hint (login_hint, ui_locales, display) kept; a longer one is dropped.
MAX_HINT_LENGTH = 256

_PREFIX = "t1."
# Each id is sealed under its own key, HKDF(master, salt): a key seals once, so the
# nonce can be fixed and /authorize may be called without limit (a random 96-bit nonce
# under one key would be good for only about 2^32 ids).
_SALT_BYTES = 16
_NONCE = bytes(12)
_AAD = b"careid-broker login transaction v1"


class TransactionTooLargeError(ValueError):
    """The request, sealed, would be longer than `MAX_TRANSACTION_ID_LENGTH`."""


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
    # The `sub` of the request's id_token_hint: only that person may complete it (OIDC
    # Core §3.1.2.1). Kept in a sealed id only: a stored transaction never has one.
    id_token_hint_sub: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LoginTransactionRecord:
    """A login transaction; `status` already accounts for expiry."""

    request: AuthorizationRequest
    created_at: datetime
    expires_at: datetime
    status: TransactionStatus
    completed_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewLoginTransaction:
    """A created transaction: `transaction_id` is the sealed request, a bearer secret."""

    transaction_id: str
    record: LoginTransactionRecord


def instant_for_extras(when: datetime) -> str:
    """An instant as a broker-local step keeps it among its extras (JSON): ISO 8601 in UTC."""
    return require_aware(when).isoformat()


def instant_from_extras(value: object) -> datetime | None:
    """An instant `instant_for_extras` wrote; None if absent or not one (a step stored by
    an older broker, which did not keep it: the caller decides what stands in)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def transaction_key(secret_key: str) -> bytes:
    """The AES-256 key that seals login transactions, derived from the broker's secret."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"careid-broker login-tx"
    ).derive(secret_key.encode("utf-8"))


class TransactionSealer:
    """Seals an authorization request into an opaque id and opens it again.

    Seals with `key`; opens with it or any of `previous` (keys being replaced).
    """

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        self._masters = (key, *previous)

    @staticmethod
    def _aead(master: bytes, salt: bytes) -> AESGCM:
        return AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_AAD).derive(master)
        )

    def seal(self, request: AuthorizationRequest, created: datetime, expires: datetime) -> str:
        r = request
        body = {
            "c": r.client_id, "r": r.redirect_uri, "s": r.scope, "st": r.state, "n": r.nonce,
            "cc": r.code_challenge, "cm": r.code_challenge_method, "p": r.prompt,
            "m": r.max_age, "a": r.acr_values, "x": dict(r.extras), "h": r.id_token_hint_sub,
            "t": _micros(created), "e": _micros(expires),
        }  # fmt: skip
        plain = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        salt = os.urandom(_SALT_BYTES)
        sealed = salt + self._aead(self._masters[0], salt).encrypt(_NONCE, plain, _AAD)
        return _PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, transaction_id: str) -> tuple[AuthorizationRequest, datetime, datetime] | None:
        """The request, made and expires; None for anything this key did not seal."""
        if (
            not transaction_id.startswith(_PREFIX)
            or len(transaction_id) > MAX_TRANSACTION_ID_LENGTH
            or not transaction_id.isascii()
        ):
            return None
        text = transaction_id[len(_PREFIX) :]
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            # One spelling per id: the decoder would also take stray characters, '+',
            # '/' and unused bits, and each spelling would hash to a transaction of its
            # own (single use is kept by the id's hash).
            if base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii") != text:
                return None
        except (binascii.Error, ValueError):
            return None
        plain = self._decrypt(sealed)
        if plain is None:
            return None
        b = json.loads(plain)
        request = AuthorizationRequest(
            client_id=b["c"], redirect_uri=b["r"], scope=b["s"], state=b["st"], nonce=b["n"],
            code_challenge=b["cc"], code_challenge_method=b["cm"], prompt=b["p"],
            max_age=b["m"], acr_values=b["a"], extras=b["x"],
            # Ids sealed before "h" was added have none: opened as without a hint.
            id_token_hint_sub=b.get("h"),
        )  # fmt: skip
        return request, _instant(b["t"]), _instant(b["e"])

    def _decrypt(self, sealed: bytes) -> bytes | None:
        salt, box = sealed[:_SALT_BYTES], sealed[_SALT_BYTES:]
        for master in self._masters:
            try:
                return self._aead(master, salt).decrypt(_NONCE, box, _AAD)
            except (InvalidTag, ValueError):
                continue
        return None


def _micros(when: datetime) -> int:
    delta = require_aware(when) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TABLE = table_of(LoginTransaction)
# Statements every sign-in runs, compiled once (see `prepared`). A sealed transaction's
# recorded state, by the id's hash:
_SETTLED = Prepared(
    select(_TABLE.c.status, _TABLE.c.completed_at).where(_TABLE.c.id_hash == bindparam("hash"))
)
# A stored transaction still pending, and pending → completed (returning the row):
_PENDING = Prepared(
    select(_TABLE.c.id_hash).where(
        _TABLE.c.id_hash == bindparam("hash"),
        _TABLE.c.status == TransactionStatus.PENDING.value,
        _TABLE.c.expires_at > bindparam("now"),
    )
)
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
_Opened = tuple[AuthorizationRequest, datetime, datetime]


class LoginTransactions:
    """Create, read, complete (once) and expire login transactions.

    Two kinds, told apart by their ids. A relying party's transaction (`sealed`, the
    default) is sealed into its id and written only when its state changes: `/authorize`
    writes nothing. A broker-local step (`sealed=False`: AUP acceptance, registration)
    is a row from the start behind a random id, because its id is kept in the browser's
    cookie and its request can carry a certificate and the RP's own transaction id,
    too much to seal into a cookie. Every instance reads, completes and expires both
    kinds alike.
    """

    def __init__(
        self,
        store: Store,
        *,
        key: bytes | None = None,
        previous_keys: Sequence[bytes] = (),
        ttl: timedelta = timedelta(minutes=15),
        sealed: bool = True,
    ) -> None:
        # Without a key (tests, one-process tools) a random one: ids open in this
        # process only. The broker passes `transaction_key(secret_key)`, and the keys
        # of its previous secret keys, which still open what they sealed.
        self._sealer = TransactionSealer(
            key if key is not None else AESGCM.generate_key(256), previous_keys
        )
        self._store = store
        self._ttl = ttl
        self._sealed = sealed

    def create(self, request: AuthorizationRequest) -> NewLoginTransaction:
        """A new pending transaction and its (secret) id; written only if not sealed."""
        now = self._store.now()
        expires = now + self._ttl
        if self._sealed:
            transaction_id = self._sealer.seal(request, now, expires)
            if len(transaction_id) > MAX_TRANSACTION_ID_LENGTH:
                raise TransactionTooLargeError(f"sealed, the request is {len(transaction_id)} long")
        else:
            if request.id_token_hint_sub is not None:
                raise ValueError("a stored login transaction cannot keep an id_token_hint")
            transaction_id = new_secret()
            row = _row(transaction_id, (request, now, expires), TransactionStatus.PENDING, None)
            with self._store.transaction() as session:
                insert_new(session, LoginTransaction(**row))
        record = _record((request, now, expires), TransactionStatus.PENDING, None)
        return NewLoginTransaction(transaction_id=transaction_id, record=record)

    def get(self, transaction_id: str) -> LoginTransactionRecord | None:
        """The transaction behind an id, or None if this broker did not make it."""
        now = self._store.now()
        if not _is_sealed(transaction_id):
            with self._store.session() as session:
                row = row_where(session, LoginTransaction, "id_hash", sha256_hex(transaction_id))
            return _from_row(row, now) if row is not None else None
        opened = self._sealer.open(transaction_id)
        if opened is None:
            return None
        with self._store.session() as session:
            settled = _SETTLED.one_or_none(session, {"hash": sha256_hex(transaction_id)})
        if settled is not None:
            return _record(opened, TransactionStatus(settled.status), settled.completed_at)
        return _record(opened, _unsettled(opened[2], now), None)

    def opened(self, transaction_id: str) -> LoginTransactionRecord | None:
        """A sealed transaction as far as its id alone tells, without the database:
        pending until it expires, even if it has completed. Only for a caller whose own
        write then checks (`CardChallenges.issue`, `complete`), so nothing is read
        twice. A stored transaction is read as `get` reads it."""
        if not _is_sealed(transaction_id):
            return self.get(transaction_id)
        opened = self._sealer.open(transaction_id)
        if opened is None:
            return None
        return _record(opened, _unsettled(opened[2], self._store.now()), None)

    def pending_in(self, session: Any, transaction_id: str) -> bool:
        """Whether the transaction is pending, read in the caller's transaction."""
        now = self._store.now()
        hashed = sha256_hex(transaction_id)
        if not _is_sealed(transaction_id):
            return _PENDING.scalar(session, {"hash": hashed, "now": now}) is not None
        opened = self._sealer.open(transaction_id)
        if opened is None or opened[2] <= now:
            return False
        return _SETTLED.one_or_none(session, {"hash": hashed}) is None

    def complete(self, transaction_id: str) -> LoginTransactionRecord | None:
        """Mark a pending, unexpired transaction completed; None if it was not.

        Single use: of two requests completing one transaction (a double-clicked
        button, two instances), exactly one writes the completion, gets the record and
        issues a code.
        """
        if not _is_sealed(transaction_id):
            now = self._store.now()
            with self._store.transaction() as session:
                row = _COMPLETE.one_or_none(
                    session, {"hash": sha256_hex(transaction_id), "now": now}
                )
            return _from_row(row, now) if row is not None else None
        return self._settle(transaction_id, TransactionStatus.COMPLETED)

    def expire(self, transaction_id: str) -> bool:
        """End a pending transaction early (cancelled, or failed for good)."""
        if not _is_sealed(transaction_id):
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
        return self._settle(transaction_id, TransactionStatus.EXPIRED) is not None

    def _settle(
        self, transaction_id: str, status: TransactionStatus
    ) -> LoginTransactionRecord | None:
        """A sealed transaction's change of state, written once (INSERT … ON CONFLICT
        DO NOTHING: of two instances racing, one writes it)."""
        opened = self._sealer.open(transaction_id)
        now = self._store.now()
        if opened is None or opened[2] <= now:
            return None
        completed_at = now if status is TransactionStatus.COMPLETED else None
        values = _row(transaction_id, opened, status, completed_at)
        with self._store.transaction() as session:
            if not insert_ignore(session, LoginTransaction, values, ["id_hash"]):
                return None
        return _record(opened, status, completed_at)

    def purge(self, *, older_than: timedelta = timedelta(days=1)) -> int:
        """Delete recorded transactions that expired long ago."""
        cutoff = self._store.now() - older_than
        with self._store.transaction() as session:
            result = session.execute(
                delete(LoginTransaction).where(LoginTransaction.expires_at < cutoff),
                execution_options={"synchronize_session": False},
            )
            return int(getattr(result, "rowcount", 0))


# The request's fields that are the row's columns: all but what only a sealed id keeps.
_COLUMNS = tuple(f.name for f in fields(AuthorizationRequest) if f.name != "id_token_hint_sub")


def _is_sealed(transaction_id: str) -> bool:
    # A stored transaction's id is `new_secret()`: base64url, never a dot.
    return transaction_id.startswith(_PREFIX)


def _row(
    transaction_id: str,
    opened: _Opened,
    status: TransactionStatus,
    completed_at: datetime | None,
) -> dict[str, Any]:
    """A transaction's row: the request's fields are its columns."""
    request, created, expires = opened
    values = {name: getattr(request, name) for name in _COLUMNS}
    values.update(
        id_hash=sha256_hex(transaction_id),
        extras=dict(request.extras),
        created_at=created,
        expires_at=expires,
        status=status.value,
        completed_at=completed_at,
    )
    return values


def _from_row(row: Any, now: datetime) -> LoginTransactionRecord:
    """A stored row's record; a pending one past its time has expired."""
    values = {name: getattr(row, name) for name in _COLUMNS}
    request = AuthorizationRequest(**{**values, "extras": dict(row.extras)})
    status = TransactionStatus(row.status)
    if status is TransactionStatus.PENDING:
        status = _unsettled(row.expires_at, now)
    return _record((request, row.created_at, row.expires_at), status, row.completed_at)


def _record(
    opened: _Opened, status: TransactionStatus, completed_at: datetime | None
) -> LoginTransactionRecord:
    request, created, expires = opened
    return LoginTransactionRecord(
        request=request,
        created_at=created,
        expires_at=expires,
        status=status,
        completed_at=completed_at,
    )


def _unsettled(expires: datetime, now: datetime) -> TransactionStatus:
    """The state of a transaction with no change recorded: pending until its time runs out."""
    return TransactionStatus.PENDING if expires > now else TransactionStatus.EXPIRED
