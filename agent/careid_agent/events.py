"""Card events for `GET /v1/events` (Server-Sent Events), fanned out to a bounded set of
subscribers.

Each subscriber has a bounded queue: a page that stops reading is dropped rather than
letting the agent's memory grow, and the number of open streams is capped so that a page
cannot tie up the agent's threads.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from typing import Any

from careid_agent.errors import AgentBusyError

QUEUE_SIZE = 64


@dataclass(frozen=True, kw_only=True)
class ServerEvent:
    """One SSE message: an event name and a JSON object."""

    name: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        """The message in text/event-stream form (RFC: `event:` and one `data:` line)."""
        payload = json.dumps(self.data, separators=(",", ":"), ensure_ascii=True)
        return f"event: {self.name}\ndata: {payload}\n\n".encode("ascii")


class StreamClosed(Exception):
    """The hub closed (the agent is stopping) or dropped this slow subscriber."""


class Subscription:
    """One open event stream."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._queue: queue.Queue[ServerEvent | None] = queue.Queue(QUEUE_SIZE)
        self.closed = False

    def next(self, timeout: float) -> ServerEvent | None:
        """The next event, or None after `timeout` (time for a keep-alive comment)."""
        if self.closed:
            raise StreamClosed()
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is None:
            self.closed = True
            raise StreamClosed()
        return event

    def put(self, event: ServerEvent | None) -> bool:
        """Queue an event; False when the queue is full (the subscriber is not reading)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            return False
        return True

    def end(self) -> None:
        """Wake the reader and make it finish."""
        self.closed = True
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # `closed` is set: the reader stops at its next call

    def close(self) -> None:
        """Unsubscribe."""
        self.closed = True
        self._hub.unsubscribe(self)


class EventHub:
    """Publishes events to every open subscription."""

    def __init__(self, *, max_subscribers: int = 8) -> None:
        self._max = max_subscribers
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self) -> Subscription:
        """A new subscription; AgentBusyError when the cap is reached."""
        with self._lock:
            if self._closed or len(self._subscribers) >= self._max:
                raise AgentBusyError()
            subscription = Subscription(self)
            self._subscribers.append(subscription)
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscription (idempotent)."""
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, event: ServerEvent) -> None:
        """Send an event to every subscriber, dropping those that have stopped reading."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            if not subscription.put(event):
                subscription.end()
                self.unsubscribe(subscription)

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions."""
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """End every stream (the agent is stopping)."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for subscription in subscribers:
            subscription.end()
