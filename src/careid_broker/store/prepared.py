"""Hot-path statements compiled once per dialect and run on the driver's own cursor.

Every sign-in runs the same score of small statements (read the login transaction,
complete it, insert the session, the code, the audit entries…). Through SQLAlchemy's
`Connection.execute` each one cost about 70 µs of the broker's CPU on top of the
database's own work (an execution context, parameter and result objects, events): more
than a millisecond per sign-in. A `Prepared` statement is compiled once per dialect by
SQLAlchemy itself (the SQL text, its parameter order, the types' bind and result
processors) and then runs straight on the DBAPI cursor of the session's connection, in
the session's transaction.

What SQLAlchemy would have done still happens: the types' processors (UTC times, JSON,
booleans) run on the way in and out; `before_cursor_execute` listeners are told (the
store's statement counter); a driver error becomes SQLAlchemy's `DBAPIError` subclass
(so "database is locked" is still an `OperationalError`, hence "store unavailable") and
a dropped connection is invalidated. Statements that need SQLAlchemy at run time
(expanding `IN` parameters, Python-side column defaults) are refused when compiled.
Only SQLAlchemy's own SQL echo (`create_store(echo=True)`, for debugging) misses them.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import Compiled

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # Parameter names in the order the driver takes them (qmark, SQLite); None when it
    # takes a mapping (pyformat, psycopg).
    order: tuple[str, ...] | None
    # Values the statement itself carries (`status == 'pending'`), and the names the
    # caller must supply.
    fixed: Mapping[str, Any]
    required: frozenset[str]
    binds: Mapping[str, Processor]
    # Builds a row (a named tuple) from the driver's values; None: no rows.
    row: Callable[[Iterable[Any]], Any] | None
    results: tuple[Processor | None, ...]

    def arguments(self, params: Mapping[str, Any]) -> Any:
        missing = self.required.difference(params)
        if missing:
            raise KeyError(f"missing statement parameters: {', '.join(sorted(missing))}")
        values = {**self.fixed, **params}
        for name, process in self.binds.items():
            values[name] = process(values[name])
        if self.order is None:
            return values
        return [values[name] for name in self.order]

    def rows(self, raw: Iterable[tuple[Any, ...]]) -> list[Any]:
        assert self.row is not None  # noqa: S101 - only called for statements with rows
        results = self.results
        make = self.row
        if not any(results):
            return [make(values) for values in raw]
        return [
            make([process(v) if process else v for process, v in zip(results, values, strict=True)])
            for values in raw
        ]


class Prepared:
    """One Core statement, compiled once per dialect, run on the session's connection.

    `column_keys` names the columns an INSERT without `.values()` gets (as
    `Compiled.column_keys`). Rows read like SQLAlchemy's: attributes named after the
    statement's columns or labels.
    """

    def __init__(self, statement: Executable, *, column_keys: Iterable[str] | None = None) -> None:
        self._statement = statement
        self._column_keys = sorted(column_keys) if column_keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def rows(self, session: Session, params: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns."""
        return cast(list[Any], self._run(session, params, fetch=True))

    def one_or_none(self, session: Session, params: Mapping[str, Any]) -> Any | None:
        """The only row, or None; more than one is an error."""
        rows = self._run(session, params, fetch=True)
        if len(rows) > 1:
            raise MultipleResultsFound("more than one row where at most one was expected")
        return rows[0] if rows else None

    def one(self, session: Session, params: Mapping[str, Any]) -> Any:
        """The only row; none or more than one is an error."""
        row = self.one_or_none(session, params)
        if row is None:
            raise NoResultFound("no row where one was expected")
        return row

    def scalar(self, session: Session, params: Mapping[str, Any]) -> Any | None:
        """The first column of the first row, or None."""
        rows = self._run(session, params, fetch=True)
        return rows[0][0] if rows else None

    def run(self, session: Session, params: Mapping[str, Any]) -> None:
        """Run a statement that returns nothing."""
        self._run(session, params, fetch=False)

    def _run(self, session: Session, params: Mapping[str, Any], *, fetch: bool) -> Any:
        # Flushed first, so the statement sees what the session still holds (as an ORM
        # query would); the connection is the session's, inside its transaction.
        session.flush()
        connection = session.connection()
        compiled = self._compiled(connection.dialect)
        arguments = compiled.arguments(params)
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None  # noqa: S101 - a checked-out connection has one
        cursor = dbapi_connection.cursor()
        try:
            connection.dispatch.before_cursor_execute(
                connection, cursor, compiled.sql, arguments, None, False
            )
            cursor.execute(compiled.sql, arguments)
            raw = cursor.fetchall() if fetch and compiled.row is not None else None
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(connection, exc, cursor, compiled.sql) from exc
        finally:
            cursor.close()
        return compiled.rows(raw) if raw is not None else None

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            with self._lock:
                found = self._by_dialect.get(dialect.name)
                if found is None:
                    found = _compile(self._statement, dialect, self._column_keys)
                    self._by_dialect[dialect.name] = found
        return found


def _compile(statement: Executable, dialect: Dialect, column_keys: list[str] | None) -> _Compiled:
    compiled: Compiled = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
    binds = compiled.binds  # type: ignore[attr-defined]
    if getattr(compiled, "escaped_bind_names", None):
        raise ValueError("Prepared statements take plain parameter names")
    for name, bind in binds.items():
        if bind.expanding or bind.literal_execute or bind.callable is not None:
            raise ValueError(f"parameter {name!r} needs SQLAlchemy at run time")
    table = getattr(statement, "table", None)
    if table is not None and column_keys is not None:
        for column in table.columns:
            if column.key not in column_keys and column.default is not None:
                raise ValueError(f"column {column.key!r} has a Python-side default")
    processors: dict[str, Processor] = {}
    for name, bind in binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    columns = list(getattr(statement, "exported_columns", ()) or ())
    row: Callable[[Iterable[Any]], Any] | None = None
    if columns:
        row = cast(Any, namedtuple("Row", [c.key for c in columns]))._make  # noqa: PYI024
    order = getattr(compiled, "positiontup", None)
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    return _Compiled(
        sql=compiled.string,
        order=tuple(order) if order is not None else None,
        fixed={name: bind.effective_value for name, bind in binds.items() if not bind.required},
        required=frozenset(name for name, bind in binds.items() if bind.required),
        binds=processors,
        row=row,
        results=results,
    )


def _wrapped(connection: Connection, exc: Exception, cursor: Any, sql: str) -> StatementError:
    """The driver's error as SQLAlchemy would have raised it; a dropped connection is
    invalidated so the pool never hands it out again."""
    dialect = connection.dialect
    dropped = dialect.is_disconnect(cast(Any, exc), connection.connection.dbapi_connection, cursor)
    if dropped:
        connection.invalidate(exc)
    return DBAPIError.instance(
        sql,
        None,  # parameters stay out of the message: token hashes, mail addresses
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=dropped,
        dialect=dialect,
    )
