"""The hash-chained, tamper-evident audit log.

Each entry's `hash` is SHA-256 over a canonical JSON encoding of all its fields,
`seq` and the previous entry's hash included. Changing a field breaks that entry's
hash; deleting an entry leaves a gap in `seq`; moving entries breaks the hash (it
covers `seq`) and the link to the previous entry. Someone able to rewrite the whole
table could recompute every hash after the change, so operators should record the
chain head (`head()`) somewhere else from time to time and pass it back as `anchor`.

Appends are serialized — a PostgreSQL advisory lock, SQLite's write lock — so entries
from several broker instances still form one chain.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, String, func, insert, select

from careid_broker.store._sql import AUDIT_CHAIN_LOCK, serialize_on
from careid_broker.store.engine import Store
from careid_broker.store.models import AuditEntry
from careid_broker.store.prepared import Prepared

GENESIS_HASH = "0" * 64
# A lone UTF-16 surrogate (a JSON \ud800 escape, an undecodable command-line byte) cannot
# be encoded as UTF-8 for the hash or the database, nor can PostgreSQL keep a NUL in a
# text column: either is kept as U+FFFD instead. (json.dumps escapes NUL in details.)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# What a value the log never writes raises as its row is read or hashed: SQLite keeps
# any value in any column ("garbage" as a time, text that is not JSON as details), and
# JSON's 1e999 reads as infinity. Verification reports such an entry as broken.
_GARBLED = (ValueError, TypeError, AttributeError)
_UNREADABLE = "entry cannot be read: a field holds a value the log never writes"

# Detail keys that name secrets; refusing them at append keeps a careless caller from
# writing a password or a token into a record that is exported and kept for years.
_FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "password",
        "pin",
        "puk",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "authorization_code",
        "private_key",
        "cookie",
        "passphrase",
    }
)


class Outcome(StrEnum):
    """Whether the audited action succeeded."""

    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """A stored audit entry."""

    seq: int
    at: datetime
    event: str
    outcome: Outcome
    error_code: str | None
    actor: str | None
    subject: str | None
    organisation: str | None
    client_address: str | None
    relying_party: str | None
    details: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for export to a SIEM)."""
        return {**_hashed_fields(self), "hash": self.hash}


@dataclass(frozen=True, kw_only=True, slots=True)
class ChainHead:
    """The last entry's position and hash: record it elsewhere as an anchor."""

    seq: int
    hash: str


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyResult:
    """The verdict of walking the chain."""

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    head: ChainHead | None = None


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hashed_fields(entry: AuditRecord | AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": _timestamp(entry.at),
        "event": entry.event,
        "outcome": str(entry.outcome),
        "error_code": entry.error_code,
        "actor": entry.actor,
        "subject": entry.subject,
        "organisation": entry.organisation,
        "client_address": entry.client_address,
        "relying_party": entry.relying_party,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
    }


def entry_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON (sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _encodable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)


def _text(value: str | None, column: str) -> str | None:
    """A text field as stored and hashed: encodable, and cut with "…" to fit its column.

    On PostgreSQL a value longer than its column is an error that would roll back the
    action being audited ("İ".lower() alone is two characters); no caller can rely on
    having checked every length.
    """
    if value is None:
        return None
    limit: int = _TEXT_LIMITS[column]
    value = _encodable(value)
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def _check_details(value: Any, path: str = "details") -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if str(key).lower() in _FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"audit {path} must not hold secrets (key {key!r})")
            _check_details(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_details(item, path)


def _record(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        event=row.event,
        outcome=Outcome(row.outcome),
        error_code=row.error_code,
        actor=row.actor,
        subject=row.subject,
        organisation=row.organisation,
        client_address=row.client_address,
        relying_party=row.relying_party,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


_HEAD = select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
_PREPARED_HEAD = Prepared(_HEAD)
_MEMO_HEAD = "audit.head"
_COLUMNS = (
    "seq",
    "at",
    "event",
    "error_code",
    "actor",
    "subject",
    "organisation",
    "client_address",
    "relying_party",
    "details",
    "prev_hash",
    "hash",
)
_APPEND = Prepared(insert(AuditEntry), column_keys=(*_COLUMNS, "outcome"))
# Each text column's length, as the database enforces it (PostgreSQL; SQLite does not).
_TEXT_LIMITS: dict[str, int] = {
    column.name: column.type.length
    for column in AuditEntry.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


class AuditLog:
    """Append, verify, export and query the audit trail."""

    BATCH = 500

    def __init__(self, store: Store) -> None:
        self._store = store

    def append(
        self,
        event: str,
        outcome: Outcome | str,
        *,
        error_code: str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        organisation: str | None = None,
        client_address: str | None = None,
        relying_party: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Add an entry at the head of the chain (e.g. `signin.card`, `failure`).

        Called inside a caller's `store.transaction()`, the entry commits or rolls back
        with it, and the chain lock is held until then: append last, and audit a
        refusal outside the transaction that is being rolled back.
        """
        _check_details(details or {})
        # Round-trip through JSON now, so what is hashed is exactly what the database
        # gives back later (tuples become lists, keys become strings, lone surrogates
        # U+FFFD). Text that was already encodable is unchanged, and hashes as before.
        clean_details = json.loads(
            _encodable(json.dumps(details or {}, allow_nan=False, ensure_ascii=False))
        )
        with self._store.transaction() as session:
            # Prepared statements, not the ORM's unit of work: every sign-in appends,
            # and an entry is never read back through this session.
            memo = self._store.transaction_memo()
            head: ChainHead | None = memo.get(_MEMO_HEAD)
            if head is None:
                # First entry of this transaction: lock the chain (held until the
                # transaction ends) and read its head. A second entry (a sign-in and
                # its code) chains onto the first without asking again.
                serialize_on(session, AUDIT_CHAIN_LOCK)
                row = _PREPARED_HEAD.one_or_none(session, {})
                head = ChainHead(seq=row.seq, hash=row.hash) if row else None
            unhashed = AuditRecord(
                seq=(head.seq + 1) if head else 1,
                # Read the clock under the lock so time never runs backwards along seq.
                at=self._store.now(),
                event=_text(event, "event") or "",
                outcome=Outcome(outcome),
                error_code=_text(str(error_code) if error_code is not None else None, "error_code"),
                actor=_text(actor, "actor"),
                subject=_text(subject.strip().lower() if subject else None, "subject"),
                organisation=_text(organisation, "organisation"),
                client_address=_text(client_address, "client_address"),
                relying_party=_text(relying_party, "relying_party"),
                details=clean_details,
                prev_hash=head.hash if head else GENESIS_HASH,
                hash="",
            )
            record = replace(unhashed, hash=entry_hash(_hashed_fields(unhashed)))
            _APPEND.run(
                session,
                {
                    **{name: getattr(record, name) for name in _COLUMNS},
                    "outcome": record.outcome.value,
                },
            )
            memo[_MEMO_HEAD] = ChainHead(seq=record.seq, hash=record.hash)
            return record

    def head(self) -> ChainHead | None:
        """The newest entry's seq and hash, or None for an empty log."""
        with self._store.session() as session:
            row = session.execute(_HEAD).one_or_none()
            return ChainHead(seq=row.seq, hash=row.hash) if row else None

    def verify_chain(self, *, anchor: ChainHead | None = None) -> VerifyResult:
        """Walk the whole chain; the first entry that breaks it, and why."""
        expected_seq, expected_prev, checked = 1, GENESIS_HASH, 0
        anchor_seen = anchor is None
        for row in self._rows_to_verify():
            seq = row if isinstance(row, int) else row.seq
            if seq != expected_seq:
                return VerifyResult(
                    ok=False,
                    checked=checked,
                    first_broken_seq=expected_seq,
                    reason=f"entry {expected_seq} is missing (next present is {seq})",
                )
            if isinstance(row, int):
                return VerifyResult(
                    ok=False, checked=checked, first_broken_seq=seq, reason=_UNREADABLE
                )
            if row.prev_hash != expected_prev:
                return VerifyResult(
                    ok=False,
                    checked=checked,
                    first_broken_seq=row.seq,
                    reason="link to the previous entry does not match",
                )
            try:
                computed = entry_hash(_hashed_fields(row))
            except _GARBLED:
                return VerifyResult(
                    ok=False, checked=checked, first_broken_seq=row.seq, reason=_UNREADABLE
                )
            if computed != row.hash:
                return VerifyResult(
                    ok=False,
                    checked=checked,
                    first_broken_seq=row.seq,
                    reason="entry contents do not match its hash",
                )
            if anchor is not None and row.seq == anchor.seq:
                if row.hash != anchor.hash:
                    return VerifyResult(
                        ok=False,
                        checked=checked,
                        first_broken_seq=row.seq,
                        reason="entry differs from the recorded anchor (chain rewritten)",
                    )
                anchor_seen = True
            checked += 1
            expected_seq, expected_prev = row.seq + 1, row.hash
        head = ChainHead(seq=expected_seq - 1, hash=expected_prev) if checked else None
        if not anchor_seen and anchor is not None:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_broken_seq=anchor.seq,
                reason="the recorded anchor entry is gone (log truncated)",
                head=head,
            )
        return VerifyResult(ok=True, checked=checked, head=head)

    def export(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every entry (optionally from a time on), oldest first, as JSON-ready dicts."""
        for row in self._iter_rows(after_seq=0, since=since):
            yield row.as_dict()

    def list_for_subject(
        self,
        subjects: Collection[str],
        *,
        event_prefix: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[AuditRecord]:
        """A person's trail (by mail and/or card UUID), newest first, for the console."""
        wanted = [s.strip().lower() for s in subjects]
        query = select(AuditEntry).where(AuditEntry.subject.in_(wanted))
        return self._newest(query, event_prefix=event_prefix, limit=limit, before_seq=before_seq)

    def list_recent(
        self,
        *,
        organisations: Collection[str] | None = None,
        event_prefix: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[AuditRecord]:
        """Recent entries, optionally scoped to organisations, newest first."""
        query = select(AuditEntry)
        if organisations is not None:
            query = query.where(AuditEntry.organisation.in_(list(organisations)))
        return self._newest(query, event_prefix=event_prefix, limit=limit, before_seq=before_seq)

    def _newest(
        self,
        query: Select[Any],
        *,
        event_prefix: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[AuditRecord]:
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be 1..1000")
        if event_prefix:
            query = query.where(AuditEntry.event.startswith(event_prefix, autoescape=True))
        if before_seq is not None:
            query = query.where(AuditEntry.seq < before_seq)
        with self._store.session() as session:
            rows = session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)).all()
            return [_record(r) for r in rows]

    def _iter_rows(self, *, after_seq: int, since: datetime | None = None) -> Iterator[AuditRecord]:
        # Keyset batches in short read sessions: a long export never holds one
        # transaction (and, on SQLite, the WAL checkpoint) open.
        last = after_seq
        while True:
            rows = self._batch(after_seq=last, since=since, limit=self.BATCH)
            yield from rows
            if len(rows) < self.BATCH:
                return
            last = rows[-1].seq

    def _rows_to_verify(self) -> Iterator[AuditRecord | int]:
        """Every entry, oldest first; for the first that cannot be read, its seq alone."""
        last, limit = 0, self.BATCH
        while True:
            try:
                rows = self._batch(after_seq=last, limit=limit)
            except _GARBLED:
                if limit > 1:
                    limit = 1  # one of the batch cannot be read: one by one, to name it
                    continue
                with self._store.session() as session:
                    seq = session.scalar(
                        select(func.min(AuditEntry.seq)).where(AuditEntry.seq > last)
                    )
                if seq is not None:
                    yield seq
                return
            yield from rows
            if len(rows) < limit:
                return
            last = rows[-1].seq

    def _batch(
        self, *, after_seq: int, limit: int, since: datetime | None = None
    ) -> list[AuditRecord]:
        query = select(AuditEntry).where(AuditEntry.seq > after_seq)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        with self._store.session() as session:
            return [
                _record(r) for r in session.scalars(query.order_by(AuditEntry.seq).limit(limit))
            ]
