"""The broker's metrics (`BrokerMetrics`), and what `serve` needs for its workers to share
them; the types and the registry are in `registry`.

`RevocationMetrics` and `DirectoryPoolMetrics` are what the adapters' observer protocols
(`pki.observer.RevocationObserver`, `directory.pool.PoolObserver`) are given: the
adapters never import this package.
"""

from __future__ import annotations

from careid_broker.metrics.registry import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    Counter,
    Gauge,
    GaugeMode,
    Histogram,
    ProcessGauge,
    Registry,
    use_multiprocess_directory,
    worker_exited,
)

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MULTIPROC_ENV",
    "BrokerMetrics",
    "Counter",
    "DirectoryPoolMetrics",
    "Gauge",
    "GaugeMode",
    "Histogram",
    "ProcessGauge",
    "Registry",
    "RetentionMetrics",
    "RevocationMetrics",
    "StoreMetrics",
    "use_multiprocess_directory",
    "worker_exited",
]


class RevocationMetrics:
    """OCSP and CRL cache lookups and failed fetches (a `pki` `RevocationObserver`)."""

    def __init__(self, registry: Registry) -> None:
        self.cache_lookups = registry.counter(
            "careid_revocation_cache_lookups_total",
            "Revocation checks by source (ocsp, crl) and whether the cache answered"
            " (hit) or the responder or distribution point had to be asked (miss).",
            ("source", "result"),
        )
        self.fetch_failures = registry.counter(
            "careid_revocation_fetch_failures_total",
            "OCSP requests and CRL fetches by source that gave no usable answer"
            " (unreachable, timed out, rejected or stale).",
            ("source",),
        )

    def cache_lookup(self, source: str, *, hit: bool) -> None:
        """A check looked in the cache."""
        self.cache_lookups.inc(source=source, result="hit" if hit else "miss")

    def fetch_failed(self, source: str) -> None:
        """Asking the responder or fetching the CRL gave nothing usable."""
        self.fetch_failures.inc(source=source)


class DirectoryPoolMetrics:
    """Directory connections open and which servers answer (a `directory` `PoolObserver`)."""

    def __init__(self, registry: Registry) -> None:
        # Summed over live workers: a worker that exits closes its connections with it.
        self.connections_open = registry.process_gauge(
            "careid_directory_connections_open",
            "Directory connections open now: bound connections kept between operations"
            " ([directory] connection_pool_size per server and account) and those in use.",
            mode="livesum",
        )
        # The newest word from any worker, even one that has exited since: whether a
        # server answered is a fact about the server, not about the worker that asked.
        self.requests = registry.counter(
            "careid_directory_requests_total",
            "Round trips to the directory by operation (connect, starttls, bind, search,"
            " modify, unbind).",
            ("operation",),
        )
        self.server_up = registry.process_gauge(
            "careid_directory_server_up",
            "1 when the last attempt at a directory server answered, 0 when it failed"
            " (it is tried after the others until it answers again).",
            ("server",),
            mode="mostrecent",
        )

    def connection_opened(self) -> None:
        """A connection is being opened."""
        self.connections_open.inc()

    def connection_closed(self) -> None:
        """A connection was closed (or never opened)."""
        self.connections_open.dec()

    def server_answered(self, server: str, *, answered: bool) -> None:
        """An attempt at `server` answered, or failed."""
        self.server_up.set(1.0 if answered else 0.0, server=server)

    def request_sent(self, operation: str) -> None:
        """One round trip to a directory server."""
        self.requests.inc(operation=operation)


class StoreMetrics:
    """Database transactions and statements (a `store` `StoreObserver`)."""

    def __init__(self, registry: Registry) -> None:
        self.transactions = registry.counter(
            "careid_store_transactions_total",
            "Database units of work begun, by kind: write transactions, and read-only"
            " units (read; on PostgreSQL these run in autocommit, with no BEGIN).",
            ("kind",),
        )
        self.statements = registry.counter(
            "careid_store_statements_total", "SQL statements sent to the database."
        )

    def transaction_begun(self, *, write: bool) -> None:
        """A transaction began."""
        self.transactions.inc(kind="write" if write else "read")

    def statement_run(self) -> None:
        """One statement was sent."""
        self.statements.inc()


class RetentionMetrics:
    """Rows the retention purge deleted (a `store` `RetentionObserver`)."""

    def __init__(self, registry: Registry) -> None:
        self.rows = registry.counter(
            "careid_retention_purged_total",
            "Rows the retention purge deleted, by kind (the table they were in).",
            ("kind",),
        )

    def purged(self, kind: str, count: int) -> None:
        """A batch of `count` rows of `kind` was deleted."""
        self.rows.inc(count, kind=kind)


class BrokerMetrics:
    """The broker's own metrics; the OP adds its own through `registry` or `tokens`."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry.from_environment()
        r = self.registry
        self.signins = r.counter(
            "careid_signins_total",
            "Sign-in attempts by method (password, card) and result (success or error code).",
            ("method", "result"),
        )
        self.requests = r.counter(
            "careid_http_requests_total",
            "HTTP requests by endpoint, method and status code.",
            ("endpoint", "method", "status"),
        )
        self.latency = r.histogram(
            "careid_http_request_duration_seconds",
            "HTTP request latency in seconds by endpoint and method.",
            ("endpoint", "method"),
        )
        self.directory_errors = r.counter(
            "careid_directory_errors_total",
            "Directory operations that failed because the directory did not answer.",
            ("operation",),
        )
        self.csrf_refusals = r.counter(
            "careid_csrf_refusals_total", "Form posts refused for a missing or wrong CSRF token."
        )
        self.tokens = r.counter(
            "careid_token_requests_total",
            "Token endpoint requests by grant type and result (success or OAuth error).",
            ("grant_type", "result"),
        )
        # Also counted by the registration view; made here so it reads 0, not absent,
        # until the first card is registered.
        self.card_registrations = r.counter(
            "careid_card_registrations_total", "Smartcards registered (linked to an account)."
        )
        self.revocation = RevocationMetrics(r)
        self.directory_pool = DirectoryPoolMetrics(r)
        self.retention = RetentionMetrics(r)
        self.store = StoreMetrics(r)

    def render(self) -> str:
        """The exposition text."""
        return self.registry.render()
