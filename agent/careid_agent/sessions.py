"""Card sessions: "this sign-in lasts while this card stays in the reader".

After a card sign-in the broker gives the page a card session reference S, and the page
hands it to the agent (`POST /v1/card-sessions`). The agent keeps (origin, card
insertion, S); when that card leaves the reader it tells each origin
`POST {origin}/card/removed {"cardSession": S}`, and the broker ends the session and logs
the person out of its web apps — the "tap out" of a shared clinical workstation.

Notices go only to allow-listed origins (checked again when sending), never follow
redirects, and run on their own threads so a slow broker never delays the card watcher.
A notice lost is a session left open on a shared workstation, so a busy or briefly
unreachable broker is tried again, with growing pauses and never sooner than its
`Retry-After` asks, for a bounded while (`patience`). An agent that stops sees no more
removals, so it reports every session it keeps as ended first (fail closed, as when
PC/SC fails): the person signs in again after an agent restart. S is a bearer reference to
someone's session, so it is never logged; a short fingerprint stands in for it.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from careid_agent.errors import InvalidCardSessionError

log = logging.getLogger(__name__)

#: URL-safe characters only (RFC 3986 "unreserved"), 16 to 256 of them: long enough to
#: be unguessable, short enough that a page cannot make the agent hoard memory.
CARD_SESSION_RE = re.compile(r"[A-Za-z0-9._~-]{16,256}")
MAX_SESSIONS_PER_CARD = 32
#: Insertions remembered as gone, to catch a registration racing a removal.
_GONE_MEMORY = 64


def check_card_session(value: object) -> str:
    """S if it is a string the agent may keep and send back; else InvalidCardSession."""
    if not isinstance(value, str) or not CARD_SESSION_RE.fullmatch(value):
        raise InvalidCardSessionError()
    return value


def fingerprint(card_session: str) -> str:
    """A short stand-in for S in logs."""
    return hashlib.sha256(card_session.encode("ascii")).hexdigest()[:12]


@dataclass(frozen=True, kw_only=True)
class CardSession:
    """One sign-in that ends when its card leaves the reader."""

    origin: str
    insertion_id: str
    reader: str
    card_session: str


class CardSessions:
    """The card sessions of the cards now in the readers (thread-safe).

    `on_change`, when given, is called with every session kept and those a card's
    removal has just released (owed a notice from then on), whenever that changes (under
    the lock, so calls come in order): the agent writes them down, so that the next
    agent can end them should this one crash (`careid_agent.journal`).
    """

    def __init__(
        self,
        *,
        max_per_card: int = MAX_SESSIONS_PER_CARD,
        on_change: Callable[[Sequence[CardSession], Sequence[CardSession]], object] | None = None,
    ) -> None:
        self._max = max_per_card
        self._on_change = on_change
        self._by_card: dict[str, OrderedDict[tuple[str, str], CardSession]] = {}
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._closed = False
        self._lock = threading.Lock()

    def add(self, session: CardSession) -> bool:
        """Keep a session; False when its card has already left, or the agent is
        stopping (notify at once)."""
        with self._lock:
            if self._closed or session.insertion_id in self._gone:
                return False
            sessions = self._by_card.setdefault(session.insertion_id, OrderedDict())
            key = (session.origin, session.card_session)
            sessions[key] = session
            sessions.move_to_end(key)
            while len(sessions) > self._max:
                # The oldest sign-in on this card is the one least likely still open.
                dropped = sessions.popitem(last=False)[1]
                log.warning(
                    "too many card sessions; forgetting %s", fingerprint(dropped.card_session)
                )
            self._changed()
            return True

    def find(self, origin: str, card_session: str) -> CardSession | None:
        """The session kept for (origin, S), if any."""
        with self._lock:
            for sessions in self._by_card.values():
                found = sessions.get((origin, card_session))
                if found is not None:
                    return found
        return None

    def card_inserted(self, insertion_id: str) -> None:
        """A card is in the reader under this id: sessions may be kept for it again."""
        with self._lock:
            self._gone.pop(insertion_id, None)

    def card_removed(self, insertion_id: str) -> list[CardSession]:
        """Forget a card's sessions and return them, to be reported ended."""
        with self._lock:
            self._gone[insertion_id] = None
            while len(self._gone) > _GONE_MEMORY:
                self._gone.popitem(last=False)
            removed = list(self._by_card.pop(insertion_id, {}).values())
            if removed:
                self._changed(released=removed)
            return removed

    def end_all(self) -> list[CardSession]:
        """Forget every session and keep no more; those forgotten, to be reported ended.

        For an agent that is stopping: once it has gone, no removal can be reported, so
        a session left kept would stay open for whoever uses the workstation next. Not
        reported as a change: the caller owes each a notice.
        """
        with self._lock:
            self._closed = True
            ended = [s for sessions in self._by_card.values() for s in sessions.values()]
            self._by_card.clear()
            return ended

    def _changed(self, released: Sequence[CardSession] = ()) -> None:
        if self._on_change is not None:
            kept = [s for sessions in self._by_card.values() for s in sessions.values()]
            self._on_change(kept, released)

    def count(self) -> int:
        """Sessions kept now."""
        with self._lock:
            return sum(len(s) for s in self._by_card.values())


#: `Retry-After` as delay-seconds (RFC 9110 §10.2.3); the other form is an HTTP-date.
_DELAY_SECONDS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, kw_only=True)
class NoticeAnswer:
    """What an origin answered a notice: its HTTP status, and how long it asked the
    agent to wait before trying again (`Retry-After`, in seconds), if it did."""

    status: int
    retry_after: float | None = None


Poster = Callable[[str, bytes, float], NoticeAnswer]
"""POST a JSON body to a URL with a timeout; the answer (raises OSError on failure)."""


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """A `Retry-After` value in seconds from `now`; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": a date with no zone it can be read in
        return None
    return max(0.0, (when - now).total_seconds())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could carry S to a host that is not on the allow-list.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_json(url: str, body: bytes, timeout: float) -> NoticeAnswer:
    """POST with urllib (system proxies and CA store); the status and `Retry-After`."""
    request = urllib.request.Request(  # noqa: S310 - the URL is an allow-listed origin
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "careid-agent"},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, headers = int(response.status), response.headers
    except urllib.error.HTTPError as exc:
        exc.close()
        status, headers = int(exc.code), exc.headers
    now = datetime.now(UTC)
    return NoticeAnswer(
        status=status, retry_after=retry_after_seconds(headers.get("Retry-After"), now=now)
    )


class NoticeLedger(Protocol):
    """Where the notices owed are written down (`careid_agent.journal.SessionJournal`)."""

    def owe(self, sessions: Iterable[CardSession]) -> None: ...

    def settle(self, session: CardSession) -> None: ...


class RemovalNotifier:
    """Sends `card/removed` notices, with retries, on a small thread pool.

    A notice is tried up to `attempts` times, for at most `patience` seconds after its
    first try: pauses double from `backoff` up to `max_backoff`, and are at least what
    the origin's `Retry-After` asks. An origin that asks for a pause past `patience` is
    given up on at once. Closing the notifier cuts the pauses short: each notice still
    pending gets one last try, so stopping the agent never waits out a pause.
    """

    def __init__(
        self,
        *,
        is_allowed: Callable[[str], bool],
        post: Poster = post_json,
        timeout: float = 3.0,
        attempts: int = 10,
        patience: float = 120.0,
        backoff: float = 0.5,
        max_backoff: float = 15.0,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 4,
        ledger: NoticeLedger | None = None,
    ) -> None:
        self._is_allowed = is_allowed
        self._ledger = ledger
        self._post = post
        self._timeout = timeout
        self._attempts = attempts
        self._patience = patience
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._closing = threading.Event()
        self._sleep = sleep or self._closing.wait
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="careid-removed")
        self._pool_lock = threading.Lock()

    def notify(self, sessions: Iterable[CardSession]) -> list[Future[bool]]:
        """Queue a notice per session; each future says whether the origin took it.

        Once closed, a notice is still sent (one try, on the caller's thread): a request
        the agent was answering as it stopped must not lose its session's ending.
        """
        sessions = list(sessions)
        if self._ledger is not None:
            self._ledger.owe(sessions)
        futures: list[Future[bool]] = []
        for session in sessions:
            with self._pool_lock:
                if not self._closing.is_set():
                    futures.append(self._pool.submit(self._send, session))
                    continue
            done: Future[bool] = Future()
            done.set_result(self._send(session))
            futures.append(done)
        return futures

    def close(self, wait: bool = True) -> None:
        """Stop taking notices; with `wait`, give those pending one last try first."""
        with self._pool_lock:
            self._closing.set()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _send(self, session: CardSession) -> bool:
        settled = self._deliver(session)
        if settled is not None and self._ledger is not None:
            self._ledger.settle(session)
        return bool(settled)

    def _deliver(self, session: CardSession) -> bool | None:
        """True: the origin took the notice; False: it may not or will not (settled all
        the same); None: not delivered, still owed (for the next agent, should this one
        stop first)."""
        tag = fingerprint(session.card_session)
        if not self._is_allowed(session.origin):
            log.warning(
                "not telling %s about card session %s: origin no longer allowed",
                session.origin,
                tag,
            )
            return False
        url = f"{session.origin}/card/removed"
        body = json.dumps({"cardSession": session.card_session}).encode("ascii")
        deadline = self._clock() + self._patience
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts or self._closing.is_set()
            pause = min(self._backoff * 2 ** (attempt - 1), self._max_backoff)
            try:
                answer = self._post(url, body, self._timeout)
            except (OSError, ValueError) as exc:  # refused, timed out, TLS, bad URL
                log.info("card/removed to %s failed (try %d): %s", session.origin, attempt, exc)
            else:
                status = answer.status
                if 200 <= status < 300:
                    log.info("told %s that card session %s ended", session.origin, tag)
                    return True
                if 400 <= status < 500 and status not in (408, 429):
                    log.warning(
                        "%s refused card/removed for %s: HTTP %d", session.origin, tag, status
                    )
                    return False
                log.info("card/removed to %s: HTTP %d (try %d)", session.origin, status, attempt)
                if answer.retry_after is not None:
                    pause = max(pause, answer.retry_after)
            if last:
                break
            if self._clock() + pause > deadline:
                log.info(
                    "card/removed to %s: the next try (in %.1f s) is past the %g s allowed",
                    session.origin,
                    pause,
                    self._patience,
                )
                break
            self._sleep(pause)
        log.warning("could not tell %s that card session %s ended", session.origin, tag)
        return None
