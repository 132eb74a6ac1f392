"""The database as the commands meet it: one line naming it when it cannot be used.

A command that reads or changes the store first checks that the database answers and
has a schema, and creates nothing when it does not: a SQLite file that is not there is
left not there (only `db upgrade` makes one). Every such refusal, and a database that
fails half-way through a command, is one line naming the database with its password
hidden, and exit status `EXIT_DATABASE`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from careid_broker.store import StoreUnavailableError, current_revision, shown_url, sqlite_file

#: The exit status of every command that needs a database it cannot use.
EXIT_DATABASE = 3

UNUSABLE_EXIT = (
    "the database cannot be reached, or has no schema yet (run careid-broker db upgrade)"
)

#: What to do about a database with no file or no schema.
CREATE_IT = "create it with `careid-broker db upgrade`"


class DatabaseUnusableError(Exception):
    """The database cannot be used; the message names it and says what to do."""


def sqlite_file_missing(url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist (None for any other URL)."""
    database = sqlite_file(url)
    if database is None:
        return None
    path = Path(database)
    return None if path.exists() else path


def require_database(url: str) -> None:
    """Refuse, creating nothing, a database that is not there, does not answer or has
    no schema."""
    missing = sqlite_file_missing(url)
    if missing is not None:
        raise DatabaseUnusableError(
            f"database {shown_url(url)}: there is no such file; {CREATE_IT}"
        )
    try:
        revision = current_revision(url)
    except DBAPIError as exc:
        raise unusable(url, exc) from exc
    if revision is None:
        raise DatabaseUnusableError(f"database {shown_url(url)}: has no schema; {CREATE_IT}")


def unusable(url: str, exc: StoreUnavailableError | DBAPIError) -> DatabaseUnusableError:
    """The one-line refusal for a database that failed: the driver's first line only,
    never the statement or its parameters (they may hold mail addresses)."""
    if isinstance(exc, DBAPIError):
        lines = str(exc.orig).strip().splitlines()
        reason = f"{type(exc.orig).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    else:
        reason = exc.detail or exc.message
    if "no such table" in reason or "does not exist" in reason:
        reason += "; if the schema is missing or old, run `careid-broker db upgrade`"
    return DatabaseUnusableError(f"database {shown_url(url)}: cannot be used: {reason}")


@contextmanager
def using_database(url: str, *, needs_schema: bool = True) -> Iterator[None]:
    """Run a command's database work: checked first (`require_database`) unless it makes
    the schema itself, and a failure on the way becomes `DatabaseUnusableError`."""
    try:
        if needs_schema:
            require_database(url)
        yield
    except (StoreUnavailableError, DBAPIError) as exc:
        raise unusable(url, exc) from exc


__all__ = [
    "CREATE_IT",
    "EXIT_DATABASE",
    "UNUSABLE_EXIT",
    "DatabaseUnusableError",
    "require_database",
    "sqlite_file_missing",
    "unusable",
    "using_database",
]
