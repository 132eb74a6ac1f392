"""Engine and session setup: `create_store(url)` and the `Store` unit of work.

SQLite (one broker instance): WAL so readers never block the writer, foreign keys on,
a busy timeout, and every write transaction opened with `BEGIN IMMEDIATE` so that
concurrent writers queue for the lock instead of failing half-way with "database is
locked" when a read lock cannot be upgraded. Writers also queue at a `WriteGate` before
they begin: a lock across this process's threads and a `flock` across the host's
worker processes, which hand over as soon as a transaction ends. Without it, writers
waiting in SQLite's busy handler sleep 10–100 ms between tries and a 2-core host spends
most of its sign-ins asleep. `synchronous` stays FULL: a commit the broker acknowledged
survives a power cut.

PostgreSQL (several instances behind a load balancer): psycopg 3, pool pre-ping so a
restarted database or a dropped idle connection is noticed before use, and a lock
timeout so one stuck instance cannot hang the others forever. Read-only units of work
run on a pool of their own whose connections are in autocommit and read-only on the
server (`default_transaction_read_only`): under READ COMMITTED each statement sees the
newest commits whether or not it is in a transaction, so the BEGIN and ROLLBACK round
trips around every read bought nothing, and a write sent by mistake in a read unit is
refused by the server rather than committed.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from careid_broker.store.base import Base, require_aware
from careid_broker.store.errors import StoreUnavailableError
from careid_broker.store.models import Heartbeat
from careid_broker.store.urls import driver_problem, with_broker_driver

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

WRITE_OPTION = "careid_write"


#: The room a SQLite database's disk must have for /readyz: several sign-ins' worth.
MIN_FREE_BYTES = 1024 * 1024


def utc_now() -> datetime:
    """The real clock: timezone-aware UTC."""
    return datetime.now(UTC)


class StoreObserver(Protocol):
    """Hears the store's work (for metrics: the benchmarks count it per sign-in)."""

    def transaction_begun(self, *, write: bool) -> None:
        """A database transaction began: a write, or a read-only unit of work."""
        ...

    def statement_run(self) -> None:
        """One SQL statement went to the database."""
        ...


class _Unobserved:
    def transaction_begun(self, *, write: bool) -> None:
        pass

    def statement_run(self) -> None:
        pass


UNOBSERVED: StoreObserver = _Unobserved()


class WriteGate:
    """One write transaction at a time on this host, handed over without sleeping.

    Threads of a process queue on a lock; processes queue on an exclusive `flock` of a
    file beside the database, which the kernel grants to the next waiter as soon as it
    is released. Both waits are bounded by the busy timeout, after which the store is
    "unavailable", as SQLite's own busy timeout would have made it.
    """

    def __init__(self, lock_path: str, *, timeout: timedelta) -> None:
        self._lock_path = lock_path
        self._timeout = timeout.total_seconds()
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = os.getpid()

    def _for_this_process(self) -> None:
        # After a fork the child starts afresh: its copy of the thread lock may have
        # been taken by a parent thread that does not exist here, and a flock is shared
        # by every copy of a descriptor, so an inherited one would exclude nothing.
        if self._pid != os.getpid():
            self._threads = threading.Lock()
            self._fd = None
            self._pid = os.getpid()

    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreUnavailableError(
                    detail=f"write gate {self._lock_path}: {exc.strerror}"
                ) from exc
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the gate for one write transaction."""
        self._for_this_process()
        deadline = time.monotonic() + self._timeout
        if not self._threads.acquire(timeout=self._timeout):
            raise StoreUnavailableError(detail="write gate: timed out waiting for this process")
        try:
            fd = self._descriptor()
            self._lock_file(fd, deadline)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    @staticmethod
    def _lock_file(fd: int, deadline: float) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        # Another process is writing. A blocking flock would wake at once on release but
        # cannot time out, so try again without blocking at short intervals (50 µs,
        # doubling up to 0.4 ms) until the deadline. A write holds the gate for 1-3 ms,
        # its commit's fsync most of it, so a waiter sleeping up to 2 ms (as before)
        # could leave the gate free for much of a write's length: under
        # bench/oidc_password_flow.py the workers spent a fifth of their time in here,
        # and the shorter sleeps gave 99-102 sign-ins/s against 90-99 (three runs each).
        # The extra failed flock calls cost next to nothing.
        delay = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailableError(
                        detail="write gate: timed out waiting for another process"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.0004)


@dataclass(kw_only=True, slots=True)
class _Ambient:
    session: Session
    write: bool
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # Set when a joined unit of work raised: its writes may be half done, so the
    # transaction it joined must not commit (see `Store.transaction`).
    failed: BaseException | None = None
    # What a unit of work learnt that stays true until this transaction ends (the audit
    # chain's head, once locked and read): see `Store.transaction_memo`.
    memo: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True, slots=True)
class _ReadUnit:
    """A request's shared read-only session (see `Store.read_unit`)."""

    session: Session | None = None
    depth: int = 0
    # Bookkeeping writes waiting for the request's next write transaction (see
    # `Store.write_later`).
    later: list[Callable[[], None]] = field(default_factory=list)


class AbandonedTransactionError(RuntimeError):
    """A unit of work that joined this transaction failed and the caller carried on:
    its writes may be half done, so the transaction was rolled back instead of committed."""


class Store:
    """The broker's database: sessions, transactions, the clock.

    Repositories call `transaction()` / `session()` themselves. When the caller already
    holds a `transaction()` on this thread, they join it, so a service can make several
    repository calls atomic:

        with store.transaction():
            ended = sessions.end_session(sid, EndReason.CARD_REMOVED)
            outbox.enqueue(sid=ended.sid, sub=ended.sub, client_ids=ended.relying_parties)

    A joined unit of work is not a SAVEPOINT (two statements more per join, on every
    sign-in): when it raises, the whole transaction is lost. A caller that catches the
    error and carries on gets `AbandonedTransactionError` at the end instead of a
    commit of half-done writes. A caller that must recover inside the transaction asks
    for `transaction(savepoint=True)`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utc_now,
        gate: WriteGate | None = None,
        observer: StoreObserver = UNOBSERVED,
        read_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        # Where read-only units of work run: `engine` itself unless given (PostgreSQL's
        # autocommit, server-side read-only pool, see `create_store`).
        self.read_engine = read_engine if read_engine is not None else engine
        self.clock = clock
        self.dialect_name = engine.dialect.name
        self._gate = gate
        self._observer = observer
        if observer is not UNOBSERVED:
            _observe(engine, observer)
            if self.read_engine is not engine:
                _observe(self.read_engine, observer)
        write_bind = engine.execution_options(**{WRITE_OPTION: True})
        self._readers = sessionmaker(bind=self.read_engine, expire_on_commit=False)
        self._writers = sessionmaker(bind=write_bind, expire_on_commit=False)
        # Per-instance, so two Store objects (two "broker instances" in one test
        # process) never share a transaction.
        self._ambient: ContextVar[_Ambient | None] = ContextVar(
            f"careid_store_{id(self):x}", default=None
        )
        self._read_unit: ContextVar[_ReadUnit | None] = ContextVar(
            f"careid_store_reads_{id(self):x}", default=None
        )

    def now(self) -> datetime:
        """The injected clock's time, checked to be timezone-aware, in UTC."""
        return require_aware(self.clock())

    @contextmanager
    def transaction(self, *, savepoint: bool = False) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on an exception.

        Inside another transaction it joins that one; with `savepoint` a failure rolls
        back only this unit's writes and the outer transaction may carry on.
        """
        current = self._ambient.get()
        if current is not None:
            if not current.write:
                # On SQLite a read transaction cannot safely upgrade to a write lock
                # (another writer may hold it: deadlock); open the write first.
                raise RuntimeError("store.transaction() opened inside a read-only session()")
            if savepoint:
                earlier = current.failed
                try:
                    with (
                        _unavailable_on_connection_errors(writing=True),
                        current.session.begin_nested(),
                    ):
                        yield current.session
                except BaseException:
                    # Rolled back to the savepoint: what failed inside it left nothing.
                    current.failed = earlier
                    raise
                finally:
                    # What was learnt inside may have been rolled back with it.
                    current.memo.clear()
                return
            try:
                with _unavailable_on_connection_errors(writing=True):
                    yield current.session
            except BaseException as exc:
                current.failed = exc
                raise
            return
        self._end_reads("store.transaction()")
        unit = self._read_unit.get()
        later: list[Callable[[], None]] = []
        if unit is not None and unit.later:
            later, unit.later = unit.later, []
        session = self._writers()
        ambient = _Ambient(session=session, write=True)
        token = self._ambient.set(ambient)
        gate = self._gate.held() if self._gate is not None else nullcontext()
        try:
            with gate, _unavailable_on_connection_errors(writing=True), session.begin():
                for write in later:
                    write()
                yield session
                if ambient.failed is not None:
                    raise AbandonedTransactionError(
                        "a unit of work in this transaction failed"
                        f" ({type(ambient.failed).__name__}) and the caller carried on:"
                        " rolled back rather than commit half of it"
                    ) from ambient.failed
        except BaseException:
            if later and unit is not None:
                unit.later[:0] = later  # rolled back with it: the request's end tries again
            raise
        finally:
            self._ambient.reset(token)
            _close(session)
        for callback in ambient.after_commit:
            callback()

    def transaction_memo(self) -> dict[str, Any]:
        """A scratch dict for the current write transaction, for what a unit of work
        may reuse until it ends (a lock it holds, a row it wrote last). Emptied
        whenever a savepoint ends, since what was learnt inside may have been rolled
        back; gone with the transaction."""
        current = self._ambient.get()
        if current is None or not current.write:
            raise RuntimeError("transaction_memo() outside a write transaction()")
        return current.memo

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the current write transaction has committed (at once when
        there is none); never when it rolls back. For work that must see the commit,
        such as waking the logout deliverer."""
        current = self._ambient.get()
        if current is None or not current.write:
            callback()
        else:
            current.after_commit.append(callback)

    @contextmanager
    def read_unit(self) -> Iterator[None]:
        """Let the reads in this block share one read-only session (one per request).

        A request reads several times before it writes (its login transaction, the
        throttle, its session): one BEGIN for all of them, not one each. The shared
        session ends when a write `transaction()` begins (SQLite cannot upgrade a read
        lock safely), so reads after a write see it, and at the end of the block.
        """
        unit = _ReadUnit()
        token = self._read_unit.set(unit)
        try:
            yield
        finally:
            try:
                if unit.later:
                    self._write_leftovers()
            finally:
                self._read_unit.reset(token)
                if unit.session is not None:
                    _close(unit.session)

    def write_later(self, write: Callable[[], None]) -> None:
        """Run `write` (a unit of work: it opens its own `transaction()`) inside this
        request's next write transaction, or at the end of the request if none comes.

        For bookkeeping that need not be on disk before the request goes on, such as
        settling a sign-in attempt: it then rides on the commit the request makes anyway
        instead of costing one of its own. Outside a request (no `read_unit`), or inside
        a write transaction, it runs at once. If the database fails at the request's
        end the write is logged as lost: use it for nothing a sign-in depends on.
        """
        unit = self._read_unit.get()
        current = self._ambient.get()
        if unit is None or (current is not None and current.write):
            write()
        else:
            unit.later.append(write)

    def _write_leftovers(self) -> None:
        try:
            with self.transaction():
                pass  # runs what `write_later` queued
        except Exception as exc:  # noqa: BLE001 - the request has been answered already
            log.warning("bookkeeping writes left at the end of a request were lost: %s", exc)

    def _end_reads(self, opening: str) -> None:
        unit = self._read_unit.get()
        if unit is None or unit.session is None:
            return
        if unit.depth:
            raise RuntimeError(f"{opening} opened inside a read-only session()")
        session, unit.session = unit.session, None
        _close(session)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read-only unit of work (rolled back at the end), or the current one."""
        current = self._ambient.get()
        if current is not None:
            yield current.session
            return
        unit = self._read_unit.get()
        if unit is not None:
            if unit.session is None:
                shared = self._readers()
                with _unavailable_on_connection_errors(writing=False):
                    shared.begin()
                unit.session = shared
            unit.depth += 1
            try:
                with _unavailable_on_connection_errors(writing=False):
                    yield unit.session
            except BaseException:
                # The session may be unusable now (a dropped connection): the next
                # read starts a fresh one.
                if unit.depth == 1 and unit.session is not None:
                    broken, unit.session = unit.session, None
                    _close(broken)
                raise
            finally:
                unit.depth -= 1
                if unit.depth == 0 and unit.session is not None:
                    # Forget what was loaded: a later read in the request loads afresh
                    # rather than trusting the identity map (PostgreSQL's READ
                    # COMMITTED shows each statement the newest commits).
                    unit.session.expunge_all()
            return
        session = self._readers()
        token = self._ambient.set(_Ambient(session=session, write=False))
        try:
            with _unavailable_on_connection_errors(writing=False):
                session.begin()
                yield session
        finally:
            # Closing rolls back: nothing read-only is ever committed.
            self._ambient.reset(token)
            _close(session)

    def ping(self) -> bool:
        """True when the database answers a trivial query (for /readyz)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            # The URL may carry a password: log the error class and message only.
            log.warning("store ping failed: %s", type(exc.orig).__name__)
            return False
        return True

    def prove_writable(self, host: str) -> bool:
        """True when the database commits a write (a heartbeat row per host), for
        /readyz: a full disk or a read-only replica answers reads but not this.

        SQLite can commit a one-row write into WAL pages it already holds while a
        sign-in's new rows find no room, so for a SQLite file the disk must also have
        `MIN_FREE_BYTES` free.
        """
        database = sqlite_file(self.engine.url)
        if database:
            try:
                free = shutil.disk_usage(os.path.dirname(os.path.abspath(database))).free
            except OSError as exc:
                log.warning("store not writable: %s", type(exc).__name__)
                return False
            if free < MIN_FREE_BYTES:
                log.warning("store not writable: %d bytes free beside the database", free)
                return False
        try:
            with self.transaction() as session:
                statement = upsert(self.dialect_name, Heartbeat).values(
                    host=host[:255], beat_at=self.now()
                )
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["host"], set_={"beat_at": statement.excluded.beat_at}
                    )
                )
        except (StoreUnavailableError, DBAPIError) as exc:
            cause = exc.orig if isinstance(exc, DBAPIError) else exc.__cause__
            log.warning("store refused the readiness write: %s", type(cause).__name__)
            return False
        return True

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or after a fork)."""
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def _observe(engine: Engine, observer: StoreObserver) -> None:
    @event.listens_for(engine, "begin")
    def _begun(conn: Any) -> None:
        observer.transaction_begun(write=bool(conn.get_execution_options().get(WRITE_OPTION)))

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*_args: Any) -> None:
        observer.statement_run()


def _close(session: Session) -> None:
    """Close a session whose work is done (committed, or read-only and rolled back).

    When the database went away meanwhile the rollback that closing sends fails too;
    that changes nothing (there is nothing left to undo, and the pool drops the dead
    connection), and must neither turn a finished request into a 500 nor hide the
    error the request itself already raised.
    """
    try:
        session.close()
    except DBAPIError as exc:
        log.warning("closing a store session failed: %s", type(exc.orig).__name__)


#: PostgreSQL conditions that mean "not now" rather than a fault in the broker's SQL, by
#: SQLSTATE class (PostgreSQL manual, appendix A); psycopg raises these as OperationalError.
_UNAVAILABLE_SQLSTATE_PREFIXES = (
    "08",  # connection exception
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57P",  # operator intervention: shutting down, starting up, in recovery
)
#: read_only_sql_transaction, which psycopg raises as InternalError.
_READ_ONLY_SQLSTATE = "25006"


def _database_cannot_take_it(exc: DBAPIError, *, writing: bool) -> bool:
    """Whether a driver error says the database cannot take the request now (down,
    locked, read-only, full) rather than that the request itself is wrong."""
    if isinstance(exc, IntegrityError | ProgrammingError | DataError):
        return False  # a fault in the broker, whatever the server is going through
    if isinstance(exc, OperationalError):
        # Connection refused or dropped, "database is locked" past the busy timeout,
        # PostgreSQL's lock_timeout or a deadlock; and SQLite's SQLITE_READONLY and
        # SQLITE_FULL, which its driver raises as OperationalError too.
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return False
    if sqlstate == _READ_ONLY_SQLSTATE:
        # In a write transaction: a standby after a failover, or a database its operator
        # made read-only. In a read-only unit the broker's own read-only pool refused a
        # write sent there by mistake: a fault, never to be passed off as an outage.
        return writing
    return sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


@contextmanager
def _unavailable_on_connection_errors(*, writing: bool) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        if not _database_cannot_take_it(exc, writing=writing):
            raise
        # The caller can only fail closed and retry later. Keep the driver's first line
        # only: str(exc) would add the SQL and its bound parameters (token hashes, mail
        # addresses) to the log.
        reason = str(exc.orig).strip().splitlines()[0][:200] if str(exc.orig).strip() else ""
        raise StoreUnavailableError(detail=f"{type(exc.orig).__name__}: {reason}") from exc


def sqlite_file(url: URL | str) -> str | None:
    """The file a SQLite URL names; None for an in-memory SQLite database (`sqlite://`,
    `:memory:`, `mode=memory`) or another kind of database."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    return parsed.database


def create_store(
    url: str | URL,
    *,
    clock: Clock = utc_now,
    busy_timeout: timedelta = timedelta(seconds=15),
    pool_size: int = 5,
    echo: bool = False,
    observer: StoreObserver = UNOBSERVED,
) -> Store:
    """A Store for a SQLite file URL or a PostgreSQL URL (`postgresql+psycopg://…`)."""
    engine = create_store_engine(url, busy_timeout=busy_timeout, pool_size=pool_size, echo=echo)
    gate: WriteGate | None = None
    read_engine: Engine | None = None
    database = sqlite_file(engine.url)
    if database:
        gate = WriteGate(os.path.abspath(database) + ".write-lock", timeout=busy_timeout)
    if engine.dialect.name == "postgresql":
        read_engine = _postgresql_engine(
            engine.url, busy_timeout=busy_timeout, pool_size=pool_size, echo=echo, read_only=True
        )
    return Store(engine, clock=clock, gate=gate, observer=observer, read_engine=read_engine)


def create_store_engine(
    url: str | URL,
    *,
    busy_timeout: timedelta = timedelta(seconds=15),
    pool_size: int = 5,
    echo: bool = False,
) -> Engine:
    """The configured Engine alone (used by `create_store` and by migrations)."""
    parsed = make_url(url)
    problem = driver_problem(parsed)
    if problem is not None:
        raise ValueError(f"unsupported database URL {parsed.drivername}://…: {problem}")
    parsed = with_broker_driver(parsed)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout=busy_timeout, echo=echo)
    return _postgresql_engine(parsed, busy_timeout=busy_timeout, pool_size=pool_size, echo=echo)


def _sqlite_engine(url: URL, *, busy_timeout: timedelta, echo: bool) -> Engine:
    memory = sqlite_file(url) is None
    kwargs: dict[str, Any] = {"echo": echo}
    if memory:
        log.warning(
            "the broker store is an in-memory SQLite database: everything is lost at exit"
            " and only one thread may use it; use a file or PostgreSQL in production"
        )
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(url, **kwargs)
    timeout_ms = int(busy_timeout.total_seconds() * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below): the sqlite3 module's own implicit
        # transactions would start SELECTs outside any transaction and break SAVEPOINT.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms:d}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _enable_wal(cursor, deadline=time.monotonic() + busy_timeout.total_seconds())
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: concurrent writers wait in the busy
        # handler instead of failing when a deferred read lock cannot be upgraded. Sent
        # straight to the sqlite3 connection: through SQLAlchemy's `exec_driver_sql`
        # the BEGIN cost several times the statement itself, twice or more per request
        # (PostgreSQL's driver sends its BEGIN below SQLAlchemy too, so neither backend
        # counts it among the statements run). Errors are wrapped as SQLAlchemy's own:
        # "database is locked" must still become StoreUnavailableError.
        write = bool(conn.get_execution_options().get(WRITE_OPTION))
        statement = "BEGIN IMMEDIATE" if write else "BEGIN DEFERRED"
        try:
            conn.connection.driver_connection.execute(statement)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc

    return engine


def _enable_wal(cursor: Any, *, deadline: float) -> None:
    # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database
    # is locked" at once instead of calling the busy handler: several connections (or
    # processes) opening a new database together must take turns. Once in WAL mode the
    # setting persists in the file and this is a cheap no-op.
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _postgresql_engine(
    url: URL, *, busy_timeout: timedelta, pool_size: int, echo: bool, read_only: bool = False
) -> Engine:
    """psycopg 3's engine; with `read_only`, for read-only units of work: every
    connection in autocommit (no BEGIN or ROLLBACK round trips) and read-only on the
    server, which refuses any write sent on it."""
    given = url.query.get("options")
    if isinstance(given, tuple):
        given = " ".join(given)
    # The lock timeout first: options the URL gives come after it, so a lock_timeout of
    # their own still wins, and anything else they set does not cost the broker its.
    timeout_ms = int(busy_timeout.total_seconds() * 1000)
    options = f"-c lock_timeout={timeout_ms:d} {given or ''}".strip()
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        # A server that accepts the connection and never answers (hung, or a firewall
        # that swallows packets) would otherwise hold every request, /readyz and
        # `check-config --connect` for ever. libpq's least is 2 s.
        connect_args["connect_timeout"] = max(2, math.ceil(busy_timeout.total_seconds()))
    kwargs: dict[str, Any] = {}
    if read_only:
        # Added to whatever options the URL gives: theirs still apply.
        options = f"{options} -c default_transaction_read_only=on"
        kwargs["isolation_level"] = "AUTOCOMMIT"
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_recycle=1800,
        connect_args={"options": options, **connect_args},
        **kwargs,
    )


def upsert(dialect: str, table: type[Base]) -> Any:
    """INSERT … ON CONFLICT for this dialect (both SQLite and PostgreSQL have it)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
