"""The card watcher: notices cards going in and out of the agent's readers.

It runs on its own thread, blocked in PC/SC's SCardGetStatusChange (through a
`ReaderSource`), and turns each change into a `CardEvent`: the service then drops the
card's cached identity, reports its card sessions ended, and tells `/v1/events`.
Cards already in the reader when the agent starts are the baseline, not insertions.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum, unique
from typing import Protocol

from careid_agent.errors import CardError
from careid_agent.transport import ReaderInfo

log = logging.getLogger(__name__)

#: How long the watcher waits after PC/SC fails before trying again.
RETRY_AFTER_ERROR = 1.0


class ReaderSource(Protocol):
    """Reader states, waiting for a change (`transport.ReaderMonitor`, or a fake)."""

    def wait(self, timeout: float) -> list[ReaderInfo]:
        """Every reader's state once something changed or `timeout` passed."""
        ...

    def cancel(self) -> None:
        """Wake a waiting thread."""
        ...

    def close(self) -> None:
        """Release PC/SC."""
        ...


@unique
class CardEventType(StrEnum):
    """The SSE event names of `/v1/events`."""

    INSERTED = "card-inserted"
    REMOVED = "card-removed"


@dataclass(frozen=True, kw_only=True)
class CardEvent:
    """A card went into or out of a reader."""

    type: CardEventType
    reader: str
    insertion_id: str
    at: dt.datetime


def diff(before: dict[str, str], after: dict[str, str], now: dt.datetime) -> list[CardEvent]:
    """Events turning `before` into `after` (reader → insertion id of its card).

    A card swapped between two looks is a removal and then an insertion.
    """
    events = []
    for reader, insertion in before.items():
        if after.get(reader) != insertion:
            events.append(
                CardEvent(type=CardEventType.REMOVED, reader=reader, insertion_id=insertion, at=now)
            )
    for reader, insertion in after.items():
        if before.get(reader) != insertion:
            events.append(
                CardEvent(
                    type=CardEventType.INSERTED, reader=reader, insertion_id=insertion, at=now
                )
            )
    return events


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CardWatcher:
    """Watches the readers on a thread and calls `on_event` for each change."""

    def __init__(
        self,
        source: ReaderSource,
        *,
        on_event: Callable[[CardEvent], None],
        wants_reader: Callable[[str], bool] = lambda name: True,
        clock: Callable[[], dt.datetime] = _utcnow,
        poll: float = 1.0,
        retry_after: float = RETRY_AFTER_ERROR,
    ) -> None:
        self._source = source
        self._on_event = on_event
        self._wants = wants_reader
        self._clock = clock
        self._poll = poll
        self._retry_after = retry_after
        self._cards: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def cards(self) -> dict[str, str]:
        """Reader → insertion id of each card present, as last seen."""
        with self._lock:
            return dict(self._cards)

    def start(self) -> None:
        """Start watching; returns once the baseline is known (or PC/SC failed once)."""
        self._thread = threading.Thread(target=self._run, name="careid-card-watcher", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=5.0)

    def stop(self) -> None:
        """Stop the thread and release PC/SC."""
        self._stop.set()
        self._source.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._source.close()

    def step(self, readers: list[ReaderInfo]) -> list[CardEvent]:
        """Take one look at the readers; the events since the last look (also delivered)."""
        after = {
            r.name: r.insertion_id
            for r in readers
            if r.insertion_id is not None and self._wants(r.name)
        }
        with self._lock:
            before, self._cards = self._cards, after
        events = diff(before, after, self._clock())
        for event in events:
            log.info("%s: %s", event.type.value, event.reader)
            try:
                self._on_event(event)
            except Exception:  # one failing handler must not stop the watching
                log.exception("handling %s failed", event.type.value)
        return events

    def _run(self) -> None:
        first = True
        failing = False
        while not self._stop.is_set():
            try:
                readers = self._source.wait(0 if first else self._poll)
            except CardError as exc:
                if not failing:
                    log.warning("cannot watch the smartcard readers: %s", exc.detail or exc.message)
                failing = True
                # Every card counts as gone: PC/SC (and its insertion counter) went away.
                readers = []
                self._stop.wait(self._retry_after)
            else:
                if failing:
                    log.info("watching the smartcard readers again")
                failing = False
            if self._stop.is_set():
                break
            if first:
                with self._lock:
                    self._cards = {
                        r.name: r.insertion_id
                        for r in readers
                        if r.insertion_id is not None and self._wants(r.name)
                    }
                first = False
                self._ready.set()
                continue
            self.step(readers)
        self._ready.set()
