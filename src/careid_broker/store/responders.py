"""Revocation state in the store, so every worker and instance agrees at once: which OCSP
responders are being skipped (`ResponderStateTable`), the verified OCSP answers
(`OcspAnswerTable`) and the newest CRL of each source and issuer (`SharedCrlTable`).

Answers and CRLs are kept as their signer's DER: the PKI layer verifies each again when
it uses it, so a row in these tables is never trusted on its own.

Back-off:

The certificate validator asks, for each revocation check, whether a responder is being
skipped; one that failed in any worker is skipped by all, and one that answered again in
any worker is asked by all. When a back-off runs out exactly one caller, in whichever
process, takes the probe (a conditional UPDATE decides), so the others keep skipping
rather than all waiting on a responder that may still be down. The shape is
`careid_broker.pki.ocsp_backoff.ResponderStates` (structural: the store does not import
the PKI layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from careid_broker.store._sql import row_where
from careid_broker.store.engine import Store, upsert
from careid_broker.store.models import OcspAnswer, OcspResponderState, SharedCrl


@dataclass(frozen=True, kw_only=True)
class ResponderRow:
    """A responder being skipped (what `ResponderStates.get` returns)."""

    since: datetime
    until: datetime
    reason: str


def _row(state: OcspResponderState) -> ResponderRow:
    return ResponderRow(since=state.since, until=state.until, reason=state.reason)


class ResponderStateTable:
    """`ResponderStates` over the `ocsp_responders` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> ResponderRow | None:
        with self._store.session() as session:
            state = session.get(OcspResponderState, key)
            return _row(state) if state is not None else None

    def take_probe(self, key: str, now: datetime, lease_until: datetime) -> bool:
        with self._store.transaction() as session:
            result = session.execute(
                update(OcspResponderState)
                .where(OcspResponderState.url == key, OcspResponderState.until <= now)
                .values(until=lease_until),
                execution_options={"synchronize_session": False},
            )
            return bool(getattr(result, "rowcount", 0))

    def mark_failed(self, key: str, now: datetime, until: datetime, reason: str) -> datetime:
        with self._store.transaction() as session:
            # An upsert: two workers finding the responder down at once both succeed.
            statement = upsert(self._store.dialect_name, OcspResponderState).values(
                url=key, since=now, until=until, reason=reason[:500]
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["url"],
                    set_={"until": statement.excluded.until, "reason": statement.excluded.reason},
                )
            )
            since = session.scalar(
                select(OcspResponderState.since).where(OcspResponderState.url == key)
            )
            return since if since is not None else now

    def clear(self, key: str) -> ResponderRow | None:
        with self._store.transaction() as session:
            state = session.get(OcspResponderState, key, with_for_update=True)
            if state is None:
                return None
            row = _row(state)
            session.execute(delete(OcspResponderState).where(OcspResponderState.url == key))
            return row

    def skipped(self, now: datetime) -> dict[str, datetime]:
        with self._store.session() as session:
            rows = session.execute(
                select(OcspResponderState.url, OcspResponderState.until).where(
                    OcspResponderState.until > now
                )
            ).all()
            return {url: until for url, until in rows}

    def clear_all(self) -> None:
        with self._store.transaction() as session:
            session.execute(delete(OcspResponderState))


@dataclass(frozen=True, kw_only=True)
class KeptAnswer:
    """A kept OCSP answer (what `OcspAnswerCache.get` returns)."""

    der: bytes
    location: str


class OcspAnswerTable:
    """`OcspAnswerCache` over the `ocsp_answers` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str, now: datetime) -> KeptAnswer | None:
        with self._store.session() as session:
            # Core: every card sign-in whose answer is cached reads it.
            row = row_where(session, OcspAnswer, "cert_key", key)
            if row is None or row.expires_at <= now:
                return None
            return KeptAnswer(der=row.der, location=row.location)

    def put(self, key: str, *, der: bytes, location: str, expires: datetime) -> None:
        with self._store.transaction() as session:
            statement = upsert(self._store.dialect_name, OcspAnswer).values(
                cert_key=key, der=der, location=location[:2048], expires_at=expires
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["cert_key"],
                    set_={
                        "der": statement.excluded.der,
                        "location": statement.excluded.location,
                        "expires_at": statement.excluded.expires_at,
                    },
                )
            )

    def clear(self) -> None:
        with self._store.transaction() as session:
            session.execute(delete(OcspAnswer))

    def forget_serial(self, serial: int) -> None:
        # The key ends ":<serial hex>" (careid_broker.pki.ocsp_cache); hex has no LIKE
        # wildcards, so the pattern is exact.
        with self._store.transaction() as session:
            session.execute(delete(OcspAnswer).where(OcspAnswer.cert_key.like(f"%:{serial:x}")))

    def size(self) -> int:
        with self._store.session() as session:
            return int(session.scalar(select(func.count()).select_from(OcspAnswer)) or 0)


class SharedCrlTable:
    """`SharedCrls` over the `shared_crls` table: one row per CRL source and issuer,
    only ever replaced by a CRL with a later lastUpdate."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def newest(self, key: str) -> datetime | None:
        with self._store.session() as session:
            return session.scalar(select(SharedCrl.last_update).where(SharedCrl.key == key))

    def load(self, key: str) -> bytes | None:
        with self._store.session() as session:
            return session.scalar(select(SharedCrl.der).where(SharedCrl.key == key))

    def offer(self, key: str, *, der: bytes, last_update: datetime, location: str) -> None:
        with self._store.transaction() as session:
            statement = upsert(self._store.dialect_name, SharedCrl).values(
                key=key,
                der=der,
                last_update=last_update,
                location=location[:2048],
                recorded_at=self._store.now(),
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["key"],
                    set_={
                        "der": statement.excluded.der,
                        "last_update": statement.excluded.last_update,
                        "location": statement.excluded.location,
                        "recorded_at": statement.excluded.recorded_at,
                    },
                    # Never back to an older CRL, whichever worker offers last.
                    where=SharedCrl.last_update < statement.excluded.last_update,
                )
            )
