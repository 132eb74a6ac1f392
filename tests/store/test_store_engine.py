"""Engine behaviour: UTC times, transactions that join, pragmas, failing closed."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from careid_broker.codes import BrokerCode
from careid_broker.store import (
    AuthorizationRequest,
    LoginTransactionRecord,
    LoginTransactions,
    NewLoginTransaction,
    Repositories,
    Store,
    StoreUnavailableError,
    create_store,
)
from careid_broker.store.engine import AbandonedTransactionError, create_store_engine
from careid_broker.store.models import LoginTransaction

#: Test material: seals login transactions alike in every instance these tests make.
TEST_TRANSACTION_KEY = bytes(range(32))
REQUEST = AuthorizationRequest(client_id="webmail", redirect_uri="https://rp/cb", scope="openid")


class _Written:
    """Login transactions as a plain writer for these tests: a pending transaction is
    not stored, so each `create` also ends it early, which writes its row."""

    def __init__(self, store: Store) -> None:
        self._transactions = LoginTransactions(store, key=TEST_TRANSACTION_KEY)

    def create(self, request: AuthorizationRequest) -> NewLoginTransaction:
        made = self._transactions.create(request)
        assert self._transactions.expire(made.transaction_id)
        return made

    def get(self, transaction_id: str) -> LoginTransactionRecord | None:
        return self._transactions.get(transaction_id)


def _count_transactions(store: Store) -> int:
    with store.session() as session:
        return len(session.scalars(select(LoginTransaction.id_hash)).all())


def test_times_come_back_as_the_same_instant_in_utc(repos: Repositories) -> None:
    sub = repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=a")
    local = datetime(2025, 6, 1, 10, 0, 0, 654321, tzinfo=timezone(timedelta(hours=2)))
    created = repos.sessions.create(
        sub=sub, account_mail="a@nhs.net", acr="AAL1_USERPASS", amr=["pwd"], auth_time=local
    )
    stored = repos.sessions.get(created.record.sid)
    assert stored is not None
    assert stored.auth_time == local
    assert stored.auth_time.utcoffset() == timedelta(0)
    assert stored.auth_time.hour == 8 and stored.auth_time.microsecond == 654321


def test_a_naive_clock_is_refused(store_url: str) -> None:
    store = create_store(store_url, clock=lambda: datetime(2025, 1, 1))
    try:
        with pytest.raises(ValueError, match="naive"):
            _Written(store).create(REQUEST)
    finally:
        store.dispose()


def test_an_exception_rolls_the_whole_transaction_back(store: Store) -> None:
    transactions = _Written(store)
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        transactions.create(REQUEST)
        transactions.create(REQUEST)
        raise RuntimeError("boom")
    assert _count_transactions(store) == 0


def test_nested_calls_join_the_outer_transaction(store: Store) -> None:
    transactions = _Written(store)
    with store.transaction():
        first = transactions.create(REQUEST)
        second = transactions.create(REQUEST)
        # Joined, not committed on their own: both visible inside, one commit at the end.
        assert transactions.get(first.transaction_id) is not None
    assert transactions.get(second.transaction_id) is not None
    assert _count_transactions(store) == 2


def test_a_failed_inner_unit_the_caller_swallowed_rolls_everything_back(store: Store) -> None:
    transactions = _Written(store)
    with pytest.raises(AbandonedTransactionError) as caught, store.transaction():
        transactions.create(REQUEST)
        try:
            with store.transaction():
                transactions.create(REQUEST)
                raise RuntimeError("inner failure")
        except RuntimeError:
            pass  # carrying on would commit the inner unit's half-done writes
        transactions.create(REQUEST)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert _count_transactions(store) == 0


def test_a_savepoint_lets_the_outer_transaction_carry_on(store: Store) -> None:
    transactions = _Written(store)
    with store.transaction():
        kept = transactions.create(REQUEST)
        with pytest.raises(RuntimeError), store.transaction(savepoint=True):
            transactions.create(REQUEST)
            with store.transaction():  # a plain join failing inside the savepoint
                raise RuntimeError("inner failure")
        # The inner savepoint rolled back; the outer transaction carries on.
        assert transactions.get(kept.transaction_id) is not None
    assert _count_transactions(store) == 1


class _Begins:
    """Counts the transactions a store begins (reads and writes apart)."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0

    def transaction_begun(self, *, write: bool) -> None:
        if write:
            self.writes += 1
        else:
            self.reads += 1

    def statement_run(self) -> None:
        pass


@pytest.fixture
def counted(store_url: str) -> Iterator[tuple[Store, _Begins]]:
    begins = _Begins()
    store = create_store(store_url, observer=begins)
    try:
        yield store, begins
    finally:
        store.dispose()


def test_reads_in_a_read_unit_share_one_transaction(counted: tuple[Store, _Begins]) -> None:
    store, begins = counted
    made = _Written(store).create(REQUEST)
    begins.writes = begins.reads = 0
    with store.read_unit():
        for _ in range(3):
            assert _Written(store).get(made.transaction_id) is not None
    assert (begins.reads, begins.writes) == (1, 0)


def test_a_write_ends_the_read_unit_and_later_reads_see_it(
    counted: tuple[Store, _Begins],
) -> None:
    store, begins = counted
    transactions = _Written(store)
    with store.read_unit():
        assert _count_transactions(store) == 0
        made = transactions.create(REQUEST)  # the shared read is ended first
        assert transactions.get(made.transaction_id) is not None
        assert _count_transactions(store) == 1
    assert (begins.reads, begins.writes) == (2, 1)


def test_a_write_for_later_rides_on_the_requests_next_write_transaction(
    counted: tuple[Store, _Begins],
) -> None:
    store, begins = counted
    transactions = _Written(store)
    with store.read_unit():
        store.write_later(lambda: transactions.create(REQUEST) and None)
        assert _count_transactions(store) == 0  # not yet
        transactions.create(REQUEST)  # the request's own write takes it along
        assert _count_transactions(store) == 2
    assert begins.writes == 1


def test_a_write_for_later_is_made_at_the_end_of_the_request_or_at_once(
    counted: tuple[Store, _Begins],
) -> None:
    store, begins = counted
    transactions = _Written(store)
    with store.read_unit():
        store.write_later(lambda: transactions.create(REQUEST) and None)
        assert _count_transactions(store) == 0
    assert _count_transactions(store) == 1 and begins.writes == 1
    store.write_later(lambda: transactions.create(REQUEST) and None)  # no request: now
    assert _count_transactions(store) == 2


def test_a_write_for_later_rolled_back_with_its_carrier_is_tried_again(store: Store) -> None:
    transactions = _Written(store)
    with store.read_unit():
        store.write_later(lambda: transactions.create(REQUEST) and None)
        with pytest.raises(RuntimeError, match="boom"), store.transaction():
            transactions.create(REQUEST)
            raise RuntimeError("boom")
        assert _count_transactions(store) == 0
    assert _count_transactions(store) == 1  # the request's end made it, alone


def test_a_write_inside_a_read_units_session_block_is_refused(store: Store) -> None:
    with store.read_unit(), store.session(), pytest.raises(RuntimeError, match="read-only"):
        _Written(store).create(REQUEST)


def test_a_failed_read_in_a_read_unit_starts_afresh(counted: tuple[Store, _Begins]) -> None:
    store, begins = counted
    with store.read_unit():
        with pytest.raises(RuntimeError, match="boom"), store.session() as session:
            session.execute(text("SELECT 1"))
            raise RuntimeError("boom")
        assert _count_transactions(store) == 0
    assert begins.reads == 2


def test_a_write_inside_a_read_session_is_refused(store: Store) -> None:
    with store.session(), pytest.raises(RuntimeError, match="read-only"):
        _Written(store).create(REQUEST)


def test_read_sessions_commit_nothing(store: Store) -> None:
    # SQLite rolls the stray write back at the end; PostgreSQL's read-only connections
    # refuse it outright.
    refused = (
        pytest.raises(DBAPIError, match="read-only")
        if store.dialect_name == "postgresql"
        else nullcontext()
    )
    with refused, store.session() as session:
        session.add(
            LoginTransaction(
                id_hash="0" * 64,
                client_id="x",
                redirect_uri="https://rp/cb",
                scope="openid",
                extras={},
                created_at=store.now(),
                expires_at=store.now(),
                status="pending",
            )
        )
        session.flush()
    assert _count_transactions(store) == 0


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'b.db'}", busy_timeout=timedelta(seconds=7))
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 7000
    finally:
        store.dispose()


def test_a_write_lock_held_elsewhere_past_the_busy_timeout_is_unavailable(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Another program (a `sqlite3` shell, a backup) holding the write lock, outside the
    broker's write gate: BEGIN IMMEDIATE waits out the busy timeout, then the store
    fails closed as unavailable, not with a raw driver error."""
    path = tmp_path / "b.db"
    shutil.copyfile(sqlite_template, path)
    store = create_store(f"sqlite:///{path}", busy_timeout=timedelta(milliseconds=200))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        _Written(store).create(REQUEST)  # WAL is on
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="locked"):
            _Written(store).create(REQUEST)
        other.execute("ROLLBACK")
        assert _Written(store).create(REQUEST).record is not None
    finally:
        other.close()
        store.dispose()


def test_ping_answers_for_a_live_database(store: Store) -> None:
    assert store.ping() is True


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-dir-for-careid/broker.db",
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2",
    ],
)
def test_an_unreachable_database_fails_closed(url: str) -> None:
    store = create_store(url)
    try:
        assert store.ping() is False
        with pytest.raises(StoreUnavailableError) as caught:
            _Written(store).create(REQUEST)
        assert caught.value.code is BrokerCode.STORE_UNAVAILABLE
        assert "database" in caught.value.message
    finally:
        store.dispose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word: a hung database."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield listener.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_database_that_never_answers_is_given_up_on(silent_server: int) -> None:
    store = create_store(
        f"postgresql+psycopg://nobody@127.0.0.1:{silent_server}/none",
        busy_timeout=timedelta(seconds=2),
    )
    try:
        started = time.monotonic()
        assert store.ping() is False
        with pytest.raises(StoreUnavailableError):
            _Written(store).create(REQUEST)
        # Two tries of at most the busy timeout each, not the 60 s test timeout.
        assert time.monotonic() - started < 15
    finally:
        store.dispose()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    engine = create_store_engine("postgresql://u@db.example/broker")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        create_store("mysql://u@h/db")
    # Drivers the broker does not ship, refused before anything imports them.
    for url in ("postgresql+psycopg2://u@h/db", "sqlite+pysqlcipher:///broker.db"):
        with pytest.raises(ValueError, match="is not a driver the broker uses"):
            create_store(url)


def test_store_now_is_utc_even_from_a_local_clock() -> None:
    store = create_store(
        "sqlite://", clock=lambda: datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    )
    assert store.now() == datetime(2025, 1, 1, 17, tzinfo=UTC)
    assert store.now().tzinfo is UTC
    store.dispose()


@pytest.mark.postgres
def test_postgresql_connections_carry_a_lock_timeout(pg_database: URL) -> None:
    store = create_store(pg_database, busy_timeout=timedelta(seconds=9))
    try:
        for engine in (store.engine, store.read_engine):
            with engine.connect() as conn:
                assert conn.execute(text("SHOW lock_timeout")).scalar() == "9s"
    finally:
        store.dispose()


@pytest.mark.postgres
def test_the_lock_timeout_is_added_to_options_the_url_gives(pg_database: URL) -> None:
    url = pg_database.update_query_dict({"options": "-c search_path=public"})
    store = create_store(url, busy_timeout=timedelta(seconds=3))
    try:
        for engine in (store.engine, store.read_engine):
            with engine.connect() as conn:
                assert conn.execute(text("SHOW lock_timeout")).scalar() == "3s"
                assert conn.execute(text("SHOW search_path")).scalar() == "public"
    finally:
        store.dispose()


@pytest.mark.postgres
def test_postgresql_options_in_the_url_apply_to_reads_and_writes(pg_database: URL) -> None:
    store = create_store(pg_database.update_query_dict({"options": "-c lock_timeout=4s"}))
    try:
        with store.transaction() as session:
            assert session.scalar(text("SHOW lock_timeout")) == "4s"
        with store.session() as session:
            assert session.scalar(text("SHOW lock_timeout")) == "4s"
            assert session.scalar(text("SHOW transaction_read_only")) == "on"
    finally:
        store.dispose()


def _backend_state(admin: Any, pid: int) -> str:
    with admin.connect() as conn:
        return str(
            conn.scalar(text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
        )


@pytest.mark.postgres
def test_postgresql_reads_hold_no_transaction_open_and_refuse_writes(pg_database: URL) -> None:
    # A read unit's statements each see the newest commits (READ COMMITTED), in a
    # transaction or not: so reads run in autocommit, with no BEGIN or ROLLBACK round
    # trip, on connections the server keeps read-only.
    store = create_store(pg_database)
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    transactions = _Written(store)
    try:
        made = transactions.create(REQUEST)
        with store.read_unit(), store.session() as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            assert transactions.get(made.transaction_id) is not None
            assert _backend_state(admin, pid) == "idle"  # not "idle in transaction"
            with pytest.raises(DBAPIError, match="read-only"):
                session.execute(text("DELETE FROM login_transactions"))
        assert transactions.get(made.transaction_id) is not None
        # Writes still run in a transaction of their own, on read-write connections.
        with store.transaction() as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            assert _backend_state(admin, pid) == "idle in transaction"
            assert session.scalar(text("SHOW transaction_read_only")) == "off"
    finally:
        admin.dispose()
        store.dispose()


@pytest.mark.postgres
def test_a_database_that_goes_away_mid_request_is_unavailable_never_a_crash(
    pg_database: URL,
) -> None:
    # PostgreSQL shutting down terminates the broker's connections. A read that had
    # already finished must not fail on closing (the rollback closing sends fails); one
    # that had not gets store_unavailable, the documented answer.
    store = create_store(pg_database)
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    try:
        with store.session() as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # Closing the finished read above raised nothing; the next one reconnects.
        with pytest.raises(StoreUnavailableError), store.session() as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            session.scalar(text("SELECT 1"))
    finally:
        admin.dispose()
        store.dispose()


def test_a_database_that_refuses_writes_is_unavailable_never_a_crash(store_url: str) -> None:
    # A PostgreSQL standby after a failover, or one its operator made read-only, answers
    # reads and refuses writes with SQLSTATE 25006, which psycopg raises as an
    # InternalError; SQLite refuses them with SQLITE_READONLY. Either way the caller can
    # only fail closed and try again later.
    url = make_url(store_url)
    if url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"options": "-c default_transaction_read_only=on"})
    store = create_store(url)
    if store.dialect_name == "sqlite":
        event.listen(
            store.engine, "connect", lambda conn, _record: conn.execute("PRAGMA query_only = ON")
        )
    try:
        with pytest.raises(StoreUnavailableError, match="read-?only") as caught:
            _Written(store).create(REQUEST)
        assert caught.value.code is BrokerCode.STORE_UNAVAILABLE
        assert _count_transactions(store) == 0
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("sqlstate", "unavailable"),
    [
        ("25006", True),  # read_only_sql_transaction: a standby, or made read-only
        ("08006", True),  # connection_failure
        ("53100", True),  # disk_full
        ("53300", True),  # too_many_connections
        ("57P01", True),  # admin_shutdown
        ("57P03", True),  # cannot_connect_now: starting up, or in recovery
        ("23505", False),  # unique_violation: a fault in the broker, not an outage
        ("42P01", False),  # undefined_table
        ("22001", False),  # string_data_right_truncation
        ("XX000", False),  # internal_error
    ],
)
def test_postgresql_errors_are_unavailable_by_their_sqlstate(
    sqlstate: str, unavailable: bool
) -> None:
    # The driver's own exception classes: psycopg picks the class from the SQLSTATE.
    raised = DBAPIError.instance(
        "INSERT INTO t VALUES (1)", None, psycopg.errors.lookup(sqlstate)("refused"), psycopg.Error
    )
    store = create_store("sqlite://")
    try:
        with pytest.raises(StoreUnavailableError if unavailable else type(raised)) as caught:
            with store.transaction():
                raise raised
        if unavailable:
            assert caught.value.__cause__ is raised
    finally:
        store.dispose()
