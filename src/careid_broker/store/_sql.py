"""The few places where SQLite and PostgreSQL need different SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, insert, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from careid_broker.store.base import Base
from careid_broker.store.prepared import Prepared

# Keys for pg_advisory_xact_lock: fixed, arbitrary 64-bit numbers, one per serialized
# resource. They only need to differ from each other and from other applications'
# keys in the same database.
AUDIT_CHAIN_LOCK = 0x63617265_69640001  # "careid" + 1
SIGNING_KEYS_LOCK = 0x63617265_69640002
RETENTION_LOCK = 0x63617265_69640003


def dialect_name(session: Session) -> str:
    """ "sqlite" or "postgresql" for the session's connection."""
    return session.get_bind().dialect.name


_IGNORING: dict[tuple[str, Table, tuple[str, ...], frozenset[str], str], Prepared] = {}


def insert_ignore(
    session: Session,
    model: type[Base],
    values: dict[str, Any],
    conflict_columns: list[str],
    *,
    conflict_where: str | None = None,
) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when the row was inserted.

    A conditional insert rather than try/except IntegrityError: on PostgreSQL a failed
    INSERT aborts the whole transaction, and two instances may race to insert. The
    statement is built once per dialect, table and conflict target, `values` its
    parameters (a `Prepared` statement, per set of columns given). `conflict_where` names
    a partial unique index's condition (SQL text), for a target that is one.
    """
    table = cast(Table, model.__table__)
    dialect = dialect_name(session)
    key = (dialect, table, tuple(conflict_columns), frozenset(values), conflict_where or "")
    statement = _IGNORING.get(key)
    if statement is None:
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT run through the ORM.
        marker = table.c[conflict_columns[0]]
        where = text(conflict_where) if conflict_where else None
        if dialect == "postgresql":
            pg_stmt = postgresql.insert(table).on_conflict_do_nothing(
                index_elements=conflict_columns, index_where=where
            )
            statement = Prepared(pg_stmt.returning(marker), column_keys=values)
        else:
            lite_stmt = sqlite.insert(table).on_conflict_do_nothing(
                index_elements=conflict_columns, index_where=where
            )
            statement = Prepared(lite_stmt.returning(marker), column_keys=values)
        _IGNORING[key] = statement
    return bool(statement.rows(session, values))


def serialize_on(session: Session, lock_key: int) -> None:
    """Hold an exclusive lock on a named resource until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do — a write
    transaction began with BEGIN IMMEDIATE already holds the database's only write lock.
    """
    if dialect_name(session) == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})


def try_serialize_on(session: Session, lock_key: int) -> bool:
    """Like `serialize_on`, but never waits: False when another transaction holds it.

    SQLite: always True, for the write lock BEGIN IMMEDIATE took is already exclusive.
    """
    if dialect_name(session) == "postgresql":
        return bool(
            session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key})
        )
    return True


def serialize_on_name(session: Session, name: str) -> None:
    """Like `serialize_on`, for a resource named at run time (e.g. one token family).

    The name is hashed to the advisory lock's 64-bit key; a collision only makes two
    unrelated transactions wait for each other, never lets two related ones overlap.
    """
    if dialect_name(session) == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name}
        )


_INSERTS: dict[tuple[Table, frozenset[str]], Prepared] = {}


def insert_new(session: Session, row: Base) -> None:
    """INSERT a new, unsaved mapped object as one prepared statement, in `session`'s
    transaction, bypassing the ORM's unit of work (which costs several times the
    statement itself on the hot path). The object stays outside the session; an
    integer `id` the database assigns is set on it.

    Whatever the transaction still holds unflushed is flushed first, so a row this one
    refers to is there before it.
    """
    mapper = sa_inspect(type(row))
    state = sa_inspect(row)
    if state.key is not None or state.session_id is not None:
        raise ValueError("insert_new takes a new object that no session holds")
    values = {
        attr.columns[0].key: state.dict[attr.key]
        for attr in mapper.column_attrs
        if attr.key in state.dict
    }
    table = cast(Table, mapper.local_table)
    key = (table, frozenset(values))
    statement = _INSERTS.get(key)
    numbered = "id" in table.c and table.c.id.primary_key
    if statement is None:
        plain = insert(table)
        statement = Prepared(plain.returning(table.c.id) if numbered else plain, column_keys=values)
        _INSERTS[key] = statement
    if numbered:
        row.id = statement.one(session, values).id  # type: ignore[attr-defined]
    else:
        statement.run(session, values)


_SELECTS: dict[tuple[Table, str], Select[Any]] = {}


def table_of(model: type[Base]) -> Table:
    """The table a model is mapped to."""
    return cast(Table, sa_inspect(model).local_table)


def columns_of(model: type[Base]) -> list[Any]:
    """Every column of `model`'s table, labelled with the model's attribute name: what a
    Core SELECT or RETURNING lists so its rows read like the mapped objects."""
    mapper = sa_inspect(model)
    table = cast(Table, mapper.local_table)
    return [table.c[attr.columns[0].key].label(attr.key) for attr in mapper.column_attrs]


def select_rows_where(model: type[Base], column: str, *, count: int | None = None) -> Select[Any]:
    """SELECT every column of `model`'s table, labelled with the model's attribute names,
    WHERE `column` = :value, or with `count`, `column` IN (:v0, … :v{count-1}): built
    once per process (and count).

    Its rows read like the mapped objects for their columns, with no ORM loading and no
    identity map: for the hot path's reads, whose rows become frozen records at once
    (run as `Prepared` statements by `row_where` and `rows_where_in`).
    """
    table = table_of(model)
    key = (table, f"{column}:{count}")
    statement = _SELECTS.get(key)
    if statement is None:
        where = table.c[column]
        condition = (
            where == bindparam("value")
            if count is None
            else where.in_([bindparam(f"v{n}") for n in range(count)])
        )
        statement = select(*columns_of(model)).where(condition)
        _SELECTS[key] = statement
    return statement


_ROWS_WHERE: dict[tuple[Table, str], Prepared] = {}


def row_where(session: Session, model: type[Base], column: str, value: Any) -> Any | None:
    """The row of `model`'s table whose unique `column` is `value`, or None: a
    `Prepared` `select_rows_where`, whose row reads like the mapped object."""
    key = (table_of(model), column)
    statement = _ROWS_WHERE.get(key)
    if statement is None:
        statement = _ROWS_WHERE[key] = Prepared(select_rows_where(model, column))
    return statement.one_or_none(session, {"value": value})


_ROWS_WHERE_IN: dict[tuple[Table, str, int], Prepared] = {}


def rows_where_in(
    session: Session, model: type[Base], column: str, values: Sequence[Any]
) -> list[Any]:
    """The rows of `model`'s table whose `column` is one of `values` (a handful: one
    statement is compiled per number of values), read like `row_where`'s."""
    if not values:
        return []
    key = (table_of(model), column, len(values))
    statement = _ROWS_WHERE_IN.get(key)
    if statement is None:
        statement = Prepared(select_rows_where(model, column, count=len(values)))
        _ROWS_WHERE_IN[key] = statement
    return statement.rows(session, {f"v{n}": value for n, value in enumerate(values)})


#: The most values one IN list carries (`scalars_in_chunks`).
IN_CHUNK = 500


def scalars_in_chunks(
    session: Session, values: Sequence[Any], statement_for: Callable[[Sequence[Any]], Any]
) -> list[Any]:
    """Every row `statement_for(chunk)` selects, over `values` in IN lists of a sane size
    (a CRL may list thousands of serial numbers)."""
    found: list[Any] = []
    for start in range(0, len(values), IN_CHUNK):
        found.extend(session.scalars(statement_for(values[start : start + IN_CHUNK])).all())
    return found
