"""`Prepared`: hot-path statements run on the driver's cursor must behave as SQLAlchemy's
`Connection.execute` would (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, create_engine, event, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, MultipleResultsFound

from careid_broker.store import Store, StoreUnavailableError, create_store
from careid_broker.store._sql import columns_of, rows_where_in, select_rows_where, table_of
from careid_broker.store.models import LoginTransaction
from careid_broker.store.prepared import Prepared

TABLE = table_of(LoginTransaction)
BY_HASH = Prepared(select_rows_where(LoginTransaction, "id_hash"))
PENDING_BY_CLIENT = Prepared(
    select(TABLE.c.id_hash)
    .where(TABLE.c.client_id == bindparam("client"), TABLE.c.status == "pending")
    .order_by(TABLE.c.id_hash)
)
COMPLETE = Prepared(
    update(TABLE)
    .where(TABLE.c.id_hash == bindparam("hash"), TABLE.c.expires_at > bindparam("now"))
    .values(status="completed", completed_at=bindparam("now"))
    .returning(*columns_of(LoginTransaction))
)
CREATED = datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)


def _values(id_hash: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id_hash": id_hash,
        "client_id": "webmail",
        "redirect_uri": "https://rp.example/cb",
        "scope": "openid",
        "state": None,
        "nonce": "n-1",
        "code_challenge": None,
        "code_challenge_method": None,
        "prompt": None,
        "max_age": 300,
        "acr_values": None,
        "extras": {"login_hint": "alex@nhs.net", "ui_locales": ["en-GB", "cy"]},
        "created_at": CREATED,
        "expires_at": CREATED + timedelta(minutes=15),
        "status": "pending",
        "completed_at": None,
    }
    return values | changes


INSERT = Prepared(insert(TABLE), column_keys=_values("x"))


@pytest.fixture
def stored(store: Store) -> Iterator[Store]:
    with store.transaction() as session:
        INSERT.run(session, _values("a" * 64))
        INSERT.run(session, _values("b" * 64, client_id="other"))
        INSERT.run(session, _values("c" * 64))
    yield store


def test_rows_read_as_sqlalchemy_reads_them(stored: Store) -> None:
    with stored.session() as session:
        ours = BY_HASH.one_or_none(session, {"value": "a" * 64})
        theirs = session.execute(
            select_rows_where(LoginTransaction, "id_hash"), {"value": "a" * 64}
        ).one()
    assert ours is not None
    assert tuple(ours) == tuple(theirs)
    # The types' own processing ran: aware UTC times, JSON, integers.
    assert ours.created_at == CREATED and ours.created_at.tzinfo is not None
    assert ours.extras == {"login_hint": "alex@nhs.net", "ui_locales": ["en-GB", "cy"]}
    assert ours.max_age == 300 and ours.completed_at is None


def test_fixed_values_and_parameters_both_bind(stored: Store) -> None:
    with stored.session() as session:
        rows = PENDING_BY_CLIENT.rows(session, {"client": "webmail"})
    assert [row.id_hash for row in rows] == ["a" * 64, "c" * 64]


def test_a_parameter_used_twice_and_returning_rows(stored: Store) -> None:
    later = CREATED + timedelta(minutes=1)
    # An aware time in another zone is the same instant once stored.
    elsewhere = later.astimezone(timezone(timedelta(hours=-5)))
    with stored.transaction() as session:
        done = COMPLETE.one_or_none(session, {"hash": "a" * 64, "now": elsewhere})
        too_late = COMPLETE.one_or_none(
            session, {"hash": "c" * 64, "now": CREATED + timedelta(hours=1)}
        )
    assert done is not None and done.status == "completed" and done.completed_at == later
    assert too_late is None


def test_a_statement_sees_the_sessions_unflushed_objects(store: Store) -> None:
    with store.transaction() as session:
        session.add(LoginTransaction(**_values("d" * 64)))
        assert BY_HASH.scalar(session, {"value": "d" * 64}) == "d" * 64


def test_more_than_one_row_where_one_was_expected_is_an_error(stored: Store) -> None:
    with stored.session() as session, pytest.raises(MultipleResultsFound):
        PENDING_BY_CLIENT.one_or_none(session, {"client": "webmail"})


def test_a_missing_parameter_is_refused_before_the_database_sees_it(stored: Store) -> None:
    with stored.session() as session, pytest.raises(KeyError, match="client"):
        PENDING_BY_CLIENT.rows(session, {})


def test_a_driver_error_is_sqlalchemys_and_rolls_the_transaction_back(stored: Store) -> None:
    with pytest.raises(IntegrityError) as raised, stored.transaction() as session:
        INSERT.run(session, _values("e" * 64))
        INSERT.run(session, _values("a" * 64))  # the primary key is taken
    # The parameters (hashes, mail addresses) stay out of the message.
    assert "alex@nhs.net" not in str(raised.value)
    with stored.session() as session:
        assert BY_HASH.one_or_none(session, {"value": "e" * 64}) is None


@pytest.mark.postgres
def test_a_terminated_connection_is_unavailable_then_replaced(pg_database: URL) -> None:
    # PostgreSQL restarting ends the broker's connections mid-request: the statement
    # answers store_unavailable, and the next request runs on a new connection.
    store = create_store(pg_database)
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(StoreUnavailableError), store.session() as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            BY_HASH.one_or_none(session, {"value": "a" * 64})
        with store.session() as session:
            assert BY_HASH.one_or_none(session, {"value": "f" * 64}) is None
            assert session.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        admin.dispose()
        store.dispose()


def test_statement_listeners_are_told(stored: Store) -> None:
    seen: list[str] = []

    def told(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    # A read runs on the read engine (PostgreSQL's read-only pool; SQLite's only one).
    event.listen(stored.read_engine, "before_cursor_execute", told)
    try:
        with stored.session() as session:
            BY_HASH.one_or_none(session, {"value": "a" * 64})
    finally:
        event.remove(stored.read_engine, "before_cursor_execute", told)
    assert len(seen) == 1 and "login_transactions" in seen[0]


def test_statements_that_need_sqlalchemy_at_run_time_are_refused(store: Store) -> None:
    expanding = Prepared(
        select(TABLE.c.id_hash).where(TABLE.c.id_hash.in_(bindparam("value", expanding=True)))
    )
    deferred = Prepared(
        select(TABLE.c.id_hash).where(TABLE.c.client_id == bindparam("c", callable_=str))
    )
    for statement in (expanding, deferred):
        with store.session() as session, pytest.raises(ValueError, match="run time"):
            statement.rows(session, {"value": ["a" * 64]})


def test_rows_where_in_reads_any_handful_of_values(stored: Store) -> None:
    with stored.session() as session:
        assert rows_where_in(session, LoginTransaction, "id_hash", []) == []
        one = rows_where_in(session, LoginTransaction, "id_hash", ["b" * 64])
        some = rows_where_in(session, LoginTransaction, "id_hash", ["c" * 64, "z", "a" * 64])
    assert [row.client_id for row in one] == ["other"]
    assert sorted(row.id_hash for row in some) == ["a" * 64, "c" * 64]
    assert all(row.created_at == CREATED for row in some)
