"""The card watcher's bookkeeping and the card sessions' removal notices, against fakes
(a scripted reader source, a recording HTTP poster) and one real local HTTP server."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from careid_agent.errors import CardError, InvalidCardSessionError, NoReaderError
from careid_agent.sessions import (
    CardSession,
    CardSessions,
    RemovalNotifier,
    check_card_session,
    post_json,
)
from careid_agent.transport import ReaderInfo
from careid_agent.watcher import CardEvent, CardWatcher, diff

NOW = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)
ATR = bytes.fromhex("3B81018000")


def reader(name: str, events: int | None) -> ReaderInfo:
    """A reader with a card (its insertion counted `events`) or, for None, empty."""
    present = events is not None
    return ReaderInfo(
        name=name, card_present=present, atr=ATR if present else b"", event_count=events or 0
    )


def test_diff_turns_snapshots_into_events() -> None:
    before = {"A": "A#1", "B": "B#1"}
    after = {"A": "A#3", "C": "C#1"}  # A swapped, B removed, C inserted
    events = [(e.type.value, e.reader, e.insertion_id) for e in diff(before, after, NOW)]
    assert events == [
        ("card-removed", "A", "A#1"),
        ("card-removed", "B", "B#1"),
        ("card-inserted", "A", "A#3"),
        ("card-inserted", "C", "C#1"),
    ]
    assert diff(after, after, NOW) == []


class ScriptedSource:
    """A ReaderSource fed by the test; each wait() returns the next snapshot."""

    def __init__(self) -> None:
        self.snapshots: queue.Queue[list[ReaderInfo] | CardError] = queue.Queue()
        self.cancelled = threading.Event()
        self.closed = False

    def wait(self, timeout: float) -> list[ReaderInfo]:
        try:
            item = self.snapshots.get(timeout=max(timeout, 0.01))
        except queue.Empty:
            return self.last
        if isinstance(item, CardError):
            raise item
        self.last = item
        return item

    last: list[ReaderInfo] = []

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def watched() -> Iterator[tuple[ScriptedSource, queue.Queue[CardEvent]]]:
    source = ScriptedSource()
    events: queue.Queue[CardEvent] = queue.Queue()
    source.snapshots.put([reader("Virtual PCD 00 01", 1), reader("Virtual PCD 00 00", 4)])

    def handle(event: CardEvent) -> None:
        if event.reader == "boom":
            raise RuntimeError("a failing handler")
        events.put(event)

    watcher = CardWatcher(
        source,
        on_event=handle,
        wants_reader=lambda name: "00 01" in name or name == "boom",
        clock=lambda: NOW,
        poll=0.01,
        retry_after=0.01,
    )
    watcher.start()
    yield source, events
    watcher.stop()
    assert source.cancelled.is_set() and source.closed


def _next(events: queue.Queue[CardEvent]) -> tuple[str, str]:
    event = events.get(timeout=2)
    return event.type.value, event.insertion_id


def test_the_watcher_reports_changes_after_its_baseline(
    watched: tuple[ScriptedSource, queue.Queue[CardEvent]],
) -> None:
    source, events = watched
    # The card already in at start is the baseline, not an insertion; 00 00 is ignored.
    source.snapshots.put([reader("Virtual PCD 00 01", None), reader("Virtual PCD 00 00", 5)])
    assert _next(events) == ("card-removed", "Virtual PCD 00 01#1#3b81018000")
    source.snapshots.put([reader("boom", 1), reader("Virtual PCD 00 01", 3)])
    assert _next(events) == ("card-inserted", "Virtual PCD 00 01#3#3b81018000")
    # PC/SC going away counts as every card leaving; the watcher keeps trying.
    source.snapshots.put(NoReaderError())
    assert _next(events) == ("card-removed", "Virtual PCD 00 01#3#3b81018000")
    assert events.empty()


def test_card_session_references_are_checked() -> None:
    good = "cs_" + "A" * 40
    assert check_card_session(good) == good
    assert check_card_session("a.b~c-d_e" * 2) == "a.b~c-d_e" * 2
    for bad in ["A" * 15, "A" * 257, "A" * 20 + "/", "A" * 20 + " ", "Ä" * 20, 7, None, ["x"]]:
        with pytest.raises(InvalidCardSessionError):
            check_card_session(bad)


def _session(
    insertion: str, reference: str = "S" * 20, origin: str = "https://a.nhs.uk"
) -> CardSession:
    return CardSession(origin=origin, insertion_id=insertion, reader="R", card_session=reference)


def test_sessions_are_kept_per_card_and_a_late_registration_is_caught() -> None:
    sessions = CardSessions(max_per_card=2)
    assert sessions.add(_session("card-1", "S" * 20))
    assert sessions.add(_session("card-1", "S" * 20))  # the same one again: kept once
    assert sessions.add(_session("card-1", "T" * 20))
    assert sessions.add(_session("card-1", "U" * 20))  # over the cap: the oldest goes
    assert sessions.add(_session("card-2", "V" * 20))
    assert sessions.count() == 3
    ended = sessions.card_removed("card-1")
    assert [s.card_session for s in ended] == ["T" * 20, "U" * 20]
    assert sessions.card_removed("card-1") == []
    # A registration arriving after its card left is refused, to be notified at once.
    assert not sessions.add(_session("card-1", "W" * 20))
    assert sessions.count() == 1


def test_a_card_seen_again_under_the_same_id_may_keep_sessions_again() -> None:
    # A watcher that lost PC/SC reports every card gone; a reader without an insertion
    # counter gives the same id to the next card of the same model. Seen again, the id
    # is no longer blocked: sign-ins with that card would otherwise end at once.
    sessions = CardSessions()
    assert sessions.card_removed("reader|atr") == []
    assert not sessions.add(_session("reader|atr"))
    sessions.card_inserted("reader|atr")
    assert sessions.add(_session("reader|atr"))
    assert sessions.count() == 1


class Recorder:
    def __init__(self, *statuses: int | Exception) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[str, bytes, float]] = []

    def __call__(self, url: str, body: bytes, timeout: float) -> int:
        self.calls.append((url, body, timeout))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(status, Exception):
            raise status
        return status


@pytest.mark.parametrize(
    ("statuses", "delivered", "attempts"),
    [
        ((204,), True, 1),
        ((ConnectionRefusedError(), TimeoutError(), 204), True, 3),
        ((503, 429, 200), True, 3),
        ((ConnectionRefusedError(),), False, 3),
        ((404,), False, 1),  # the broker said no: retrying will not change its mind
    ],
)
def test_removal_notices_retry_then_give_up(
    statuses: tuple[int | Exception, ...], delivered: bool, attempts: int
) -> None:
    post = Recorder(*statuses)
    sleeps: list[float] = []
    notifier = RemovalNotifier(
        is_allowed=lambda origin: True, post=post, timeout=1.5, attempts=3, sleep=sleeps.append
    )
    (future,) = notifier.notify([_session("card-1", "S" * 20, "https://sso.example.nhs.uk")])
    assert future.result(timeout=5) is delivered
    notifier.close()
    assert len(post.calls) == attempts
    assert post.calls[0] == (
        "https://sso.example.nhs.uk/card/removed",
        b'{"cardSession": "' + b"S" * 20 + b'"}',
        1.5,
    )
    assert sleeps == [0.5, 1.0][: attempts - 1]


def test_removal_notices_go_to_allowed_origins_only() -> None:
    post = Recorder(204)
    notifier = RemovalNotifier(is_allowed=lambda origin: origin == "https://a.nhs.uk", post=post)
    allowed, other = notifier.notify(
        [_session("c", origin="https://a.nhs.uk"), _session("c", origin="https://b.nhs.uk")]
    )
    assert allowed.result(timeout=5) is True and other.result(timeout=5) is False
    notifier.close()
    assert [url for url, _, _ in post.calls] == ["https://a.nhs.uk/card/removed"]


def _server(status: int, extra: dict[str, str]) -> tuple[ThreadingHTTPServer, list[Any]]:
    seen: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            seen.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_post_json_never_follows_a_redirect() -> None:
    elsewhere, elsewhere_seen = _server(204, {})
    target = f"http://127.0.0.1:{elsewhere.server_address[1]}/card/removed"
    broker, broker_seen = _server(307, {"Location": target})
    try:
        url = f"http://127.0.0.1:{broker.server_address[1]}/card/removed"
        assert post_json(url, b'{"cardSession": "x"}', 2.0) == 307
        assert broker_seen == [("/card/removed", b'{"cardSession": "x"}')]
        assert elsewhere_seen == []  # the reference did not travel on
    finally:
        for server in (elsewhere, broker):
            server.shutdown()
            server.server_close()
