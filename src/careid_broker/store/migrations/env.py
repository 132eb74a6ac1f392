"""Alembic environment: run with a connection handed over by `store.migrate`.

The broker never reads an alembic.ini: `careid-broker db upgrade` (through
`careid_broker.store.migrate.upgrade`) opens the connection with the store's own engine
settings (SQLite pragmas, BEGIN IMMEDIATE) and passes it in `config.attributes`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from careid_broker.store import models  # noqa: F401  (registers every table)
from careid_broker.store.base import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use db upgrade")

_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("run migrations through careid_broker.store.migrate, not the alembic CLI")
_run(_connection)
