"""Which directory server to try, in which order, remembering recent failures.

ldap3's ServerPool keeps its state per Connection object and, with `exhaust=True`, drops
a failed server for good — wrong for a broker that opens a connection per request and
must recover by itself when a server comes back. This pool is shared by every request:
a server that failed is tried last for `retry_after` seconds, never forgotten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from careid_broker.directory.config import PoolStrategy

S = TypeVar("S")


class PoolObserver(Protocol):
    """Hears how the directory connections stand (for metrics); must never raise."""

    def connection_opened(self) -> None:
        """A connection to a server is being opened."""
        ...

    def connection_closed(self) -> None:
        """That connection was closed (or never got open)."""
        ...

    def server_answered(self, server: str, *, answered: bool) -> None:
        """An attempt at `server` (its URL) answered, or failed."""
        ...

    def request_sent(self, operation: str) -> None:
        """One round trip to a server: connect, starttls, bind, search, modify, unbind."""
        ...


class _Unobserved:
    def connection_opened(self) -> None:
        pass

    def connection_closed(self) -> None:
        pass

    def server_answered(self, server: str, *, answered: bool) -> None:
        pass

    def request_sent(self, operation: str) -> None:
        pass


#: Nobody listening (a directory built without the broker's metrics).
UNOBSERVED: PoolObserver = _Unobserved()


class ServerPool(Generic[S]):
    """Orders servers for one attempt; thread-safe."""

    def __init__(
        self,
        servers: Sequence[S],
        *,
        strategy: PoolStrategy,
        retry_after: float,
        monotonic: Callable[[], float],
    ) -> None:
        if not servers:
            raise ValueError("a server pool needs at least one server")
        self._servers = tuple(servers)
        self._strategy = strategy
        self._retry_after = retry_after
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next = 0
        self._failed_at: dict[int, float] = {}

    def order(self) -> list[tuple[int, S]]:
        """(index, server) pairs to try in turn: healthy ones first, then the rest.

        Servers that failed recently go last rather than being left out, so when all of
        them are down every one is still tried and a recovered server is found at once.
        """
        with self._lock:
            count = len(self._servers)
            start = 0
            if self._strategy is PoolStrategy.ROUND_ROBIN:
                start = self._next
                self._next = (self._next + 1) % count
            now = self._monotonic()
            indexes = [(start + offset) % count for offset in range(count)]
            healthy = [i for i in indexes if not self._is_resting(i, now)]
            resting = [i for i in indexes if self._is_resting(i, now)]
        return [(i, self._servers[i]) for i in healthy + resting]

    def _is_resting(self, index: int, now: float) -> bool:
        failed_at = self._failed_at.get(index)
        return failed_at is not None and now - failed_at < self._retry_after

    def mark_failed(self, index: int) -> None:
        """The server did not answer: try others first for a while."""
        with self._lock:
            self._failed_at[index] = self._monotonic()

    def mark_ok(self, index: int) -> None:
        """The server answered."""
        with self._lock:
            self._failed_at.pop(index, None)
