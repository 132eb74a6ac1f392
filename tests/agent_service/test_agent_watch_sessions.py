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
    NoticeAnswer,
    RemovalNotifier,
    check_card_session,
    post_json,
    retry_after_seconds,
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
    """A poster answering from a script (its last answer again once the script ends)."""

    def __init__(self, *statuses: int | NoticeAnswer | Exception) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[str, bytes, float]] = []

    def __call__(self, url: str, body: bytes, timeout: float) -> NoticeAnswer:
        self.calls.append((url, body, timeout))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(status, Exception):
            raise status
        return status if isinstance(status, NoticeAnswer) else NoticeAnswer(status=status)


class Pauses:
    """The notifier's sleep and clock: a pause is recorded and moves the clock on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.taken: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.taken.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _notify_once(post: Recorder, **settings: Any) -> tuple[bool, list[float]]:
    """Send one notice with `settings`; whether it was delivered, and the pauses taken."""
    pauses = Pauses()
    notifier = RemovalNotifier(
        is_allowed=lambda origin: True,
        post=post,
        sleep=pauses.sleep,
        clock=pauses.clock,
        **settings,
    )
    (future,) = notifier.notify([_session("card-1")])
    delivered = future.result(timeout=5)
    notifier.close()
    return delivered, pauses.taken


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


def test_a_notice_outlasts_a_broker_restart() -> None:
    # Unreachable for half a minute (a restart, a failover): the notice still arrives.
    post = Recorder(*[ConnectionRefusedError()] * 6, 204)
    delivered, pauses = _notify_once(post)
    assert delivered and len(post.calls) == 7
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0]


def test_a_notice_waits_as_long_as_retry_after_asks() -> None:
    post = Recorder(
        NoticeAnswer(status=429, retry_after=40.0),
        NoticeAnswer(status=503, retry_after=0.0),  # never sooner than the agent's own pause
        204,
    )
    delivered, pauses = _notify_once(post)
    assert delivered and pauses == [40.0, 1.0]


def test_a_notice_is_given_up_once_its_patience_runs_out() -> None:
    post = Recorder(503)
    delivered, pauses = _notify_once(post, patience=30.0, attempts=20)
    # 0.5 + 1 + 2 + 4 + 8 = 15.5 s; the next pause (15 s) would end past 30 s.
    assert not delivered and pauses == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert len(post.calls) == 6
    # Asked to wait longer than it may, it gives up at once rather than try too soon.
    post = Recorder(NoticeAnswer(status=429, retry_after=600.0))
    delivered, pauses = _notify_once(post)
    assert not delivered and pauses == [] and len(post.calls) == 1


def test_closing_the_notifier_cuts_a_pause_short_with_one_last_try() -> None:
    answered = threading.Event()

    def post(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        status = 503 if not answered.is_set() else 204
        answered.set()
        return NoticeAnswer(status=status, retry_after=3600.0 if status == 503 else None)

    # Its own pauses (no sleep given): the first one would last an hour.
    notifier = RemovalNotifier(is_allowed=lambda origin: True, post=post, patience=7200.0)
    (future,) = notifier.notify([_session("card-1")])
    assert answered.wait(timeout=5)
    notifier.close(wait=True)  # the agent stopping
    assert future.result(timeout=0) is True


def test_a_notice_after_closing_is_still_sent_once() -> None:
    # A page's hand-over the agent was still answering as it stopped: refused (the
    # agent keeps nothing more), and its session's ending is sent there and then.
    sessions = CardSessions()
    assert sessions.add(_session("card-1", "S" * 20))
    assert [s.card_session for s in sessions.end_all()] == ["S" * 20]
    assert not sessions.add(_session("card-2", "T" * 20)) and sessions.count() == 0
    post = Recorder(503)
    notifier = RemovalNotifier(is_allowed=lambda origin: True, post=post)
    notifier.close()
    (future,) = notifier.notify([_session("card-2", "T" * 20)])
    assert future.result(timeout=0) is False and len(post.calls) == 1


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
        assert post_json(url, b'{"cardSession": "x"}', 2.0) == NoticeAnswer(status=307)
        assert broker_seen == [("/card/removed", b'{"cardSession": "x"}')]
        assert elsewhere_seen == []  # the reference did not travel on
    finally:
        for server in (elsewhere, broker):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize(
    ("status", "header", "seconds"),
    [
        (429, "7", 7.0),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by: no wait
        (503, "soon", None),
        (204, None, None),
    ],
)
def test_post_json_reads_retry_after(
    status: int, header: str | None, seconds: float | None
) -> None:
    broker, seen = _server(status, {"Retry-After": header} if header else {})
    try:
        url = f"http://127.0.0.1:{broker.server_address[1]}/card/removed"
        assert post_json(url, b"{}", 2.0) == NoticeAnswer(status=status, retry_after=seconds)
        assert len(seen) == 1
    finally:
        broker.shutdown()
        broker.server_close()


def test_retry_after_is_delay_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)
    assert retry_after_seconds(" 60 ", now=now) == 60.0
    assert retry_after_seconds("Sat, 21 Nov 2026 09:31:30 GMT", now=now) == 90.0
    for unreadable in (None, "", "-1", "1.5", "1e3", "٣", "Sat, 21 Nov 2026 09:31:30 -0000"):
        assert retry_after_seconds(unreadable, now=now) is None, unreadable
