"""Database URLs as the broker reads and shows them: which drivers it opens them with,
and the URL with its passwords hidden.

The broker ships two drivers: Python's own sqlite3 and psycopg 3 (the `[postgres]`
extra). SQLAlchemy accepts many more URL schemes (`postgresql+psycopg2://`,
`+asyncpg`, `sqlite+pysqlcipher://`), each needing a driver the broker neither installs
nor was tested with, and would only fail when a command first connects. The
configuration check asks `driver_problem` instead, so such a URL, or a broker installed
without psycopg, is one named problem before anything runs.
"""

from __future__ import annotations

from urllib.parse import quote_plus

from sqlalchemy.engine import URL, make_url

#: Each URL scheme the broker opens, and the one that names its driver in full.
_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    # SQLAlchemy's default PostgreSQL driver is psycopg2; the broker ships psycopg 3.
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}

#: What to write for each backend instead of a scheme the broker does not open.
_INSTEAD = {
    "sqlite": "sqlite:///path/to/broker.db",
    "postgresql": "postgresql+psycopg://user@host/database",
}

_MISSING = {
    "postgresql": (
        "the PostgreSQL driver psycopg is not installed: install the broker with its"
        " [postgres] extra (pip install 'careid-bridge[postgres]')"
    ),
    "sqlite": "Python's sqlite3 module cannot be loaded: this Python was built without it",
}


def with_broker_driver(url: URL) -> URL:
    """The URL naming the driver the broker opens it with (`postgresql://` is psycopg 3)."""
    scheme = _SCHEMES.get(url.drivername)
    return url if scheme is None or scheme == url.drivername else url.set(drivername=scheme)


def driver_problem(url: URL | str) -> str | None:
    """Why the broker cannot open this URL's driver, or None: a backend other than SQLite
    or PostgreSQL, a driver it does not ship, or its driver not installed."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend not in _INSTEAD:
        return f"{backend!r} databases are not supported"
    if parsed.drivername not in _SCHEMES:
        return f"{parsed.drivername!r} is not a driver the broker uses: write {_INSTEAD[backend]}"
    try:
        # What SQLAlchemy itself does on the first connection: import the driver.
        with_broker_driver(parsed).get_dialect().import_dbapi()
    except ImportError:
        return _MISSING[backend]
    return None


def shown_url(url: URL | str) -> str:
    """The URL as it may be printed or logged: the password hidden, in the user part and
    in the query (libpq reads `?password=` and `?sslpassword=`, which SQLAlchemy's own
    `hide_password` leaves in clear)."""
    parsed = make_url(url) if isinstance(url, str) else url
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    pairs = []
    for key in sorted(parsed.query):
        value = parsed.query[key]
        for one in (value,) if isinstance(value, str) else value:
            text = "***" if "password" in key.lower() else quote_plus(one)
            pairs.append(f"{quote_plus(key)}={text}")
    return f"{shown}?{'&'.join(pairs)}" if pairs else shown


__all__ = ["driver_problem", "shown_url", "with_broker_driver"]
