"""`careid-agent serve`: the parts of the running agent, wired together.

Every outside dependency (PC/SC, the PIN entry, the HTTP client for removal notices) is
a constructor argument defaulting to the real thing, so tests run the same wiring
against the virtual card and a local test broker.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

from careid_agent import transport
from careid_agent.card import CardService
from careid_agent.config import LISTEN_ADDRESS, AgentConfig
from careid_agent.events import EventHub
from careid_agent.http_api import AgentHTTPServer
from careid_agent.journal import SessionJournal
from careid_agent.pcsc_monitor import ReaderMonitor
from careid_agent.pin import PinEntry, make_pin_entry
from careid_agent.service import AgentService
from careid_agent.sessions import CardSessions, Poster, RemovalNotifier, post_json
from careid_agent.signings import Signings
from careid_agent.transport import CardConnection, ReaderInfo
from careid_agent.ui_thread import MainThreadRunner
from careid_agent.watcher import CardWatcher, ReaderSource

log = logging.getLogger(__name__)


#: The least time a card operation waits for another program's PC/SC transaction.
MIN_TRANSACTION_WAIT = 1.0


class Agent:
    """The running agent: HTTP server, card watcher, removal notices."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        connect: Callable[[], CardConnection] | None = None,
        list_readers: Callable[[], list[ReaderInfo]] = transport.scan_readers,
        reader_source: ReaderSource | None = None,
        pin_entry: PinEntry | None = None,
        post: Poster = post_json,
        environ: Mapping[str, str] | None = None,
        runner: MainThreadRunner | None = None,
    ) -> None:
        self.config = config
        self.runner = runner or MainThreadRunner()
        if connect is None:
            connect = functools.partial(
                transport.connect,
                config.reader,
                preference=config.reader_preference,
                # Another program's transaction is waited for as long as another sign-in
                # is, but never less than a second: programs hold one for milliseconds.
                transaction_wait=max(config.card_wait, MIN_TRANSACTION_WAIT),
            )
        self.cards = CardService(connect, pin_policy=config.pin_policy)
        self.pin_entry = pin_entry or make_pin_entry(
            config.pin_provider,
            timeout=config.pin_timeout,
            dev=config.dev,
            environ=environ,
            runner=self.runner,
        )
        self.hub = EventHub(max_subscribers=config.max_event_streams)
        allowed = frozenset(config.allowed_origins)
        self.journal = (
            SessionJournal(config.card_sessions_file, is_ours=allowed.__contains__)
            if config.card_sessions_file
            else None
        )
        self.sessions = CardSessions(on_change=self.journal.kept if self.journal else None)
        self.notifier = RemovalNotifier(
            ledger=self.journal,
            is_allowed=allowed.__contains__,
            post=post,
            timeout=config.removal_notice_timeout,
            attempts=config.removal_notice_attempts,
            patience=config.removal_notice_patience,
        )
        self.service = AgentService(
            cards=self.cards,
            pin_entry=self.pin_entry,
            list_readers=list_readers,
            sessions=self.sessions,
            notifier=self.notifier,
            hub=self.hub,
            signings=Signings(),
            reader=config.reader,
            reader_preference=config.reader_preference,
            pin_policy=config.pin_policy,
            card_wait=config.card_wait,
            present_cards=lambda: self.watcher.cards(),
        )
        self.watcher = CardWatcher(
            reader_source or ReaderMonitor(),
            on_event=self.service.on_card_event,
            wants_reader=self.service.wants_reader,
        )
        self.server = AgentHTTPServer(
            config.port,
            service=self.service,
            hub=self.hub,
            allowed_origins=allowed,
            keepalive=config.event_keepalive,
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the API listens, e.g. http://127.0.0.1:47600."""
        return f"http://{LISTEN_ADDRESS}:{self.server.port}"

    def start(self) -> None:
        """End the card sessions an agent that did not stop left behind, then start
        watching the readers and serving requests (on background threads)."""
        if self.journal is not None:
            # Its cards may still be in the readers, but this agent did not see them
            # signed with: as after a stop, the person signs in again (fail closed).
            # Each stays written down until its origin takes the notice.
            left = self.journal.open()
            if left:
                log.warning(
                    "ending %d card session(s) the last agent left without a delivered notice",
                    len(left),
                )
                self.notifier.notify(left)
        self.watcher.start()
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how quickly stop() is noticed
            name="careid-agent-http",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "careid-agent listening on %s for %s (PIN: %s, %s)",
            self.url,
            ", ".join(self.config.allowed_origins),
            self.config.pin_provider.value,
            self.config.pin_policy.value,
        )

    def stop(self) -> None:
        """Stop serving, end the event streams, stop watching, end every card session
        kept (fail closed) and send the pending notices."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self.hub.close()
        self.watcher.stop()
        # A stopped agent sees no removal, so the cards still in the readers are treated
        # as gone, as when PC/SC fails: each session is reported ended (one try each, as
        # the notifier closes) rather than left open for the next person.
        ended = self.sessions.end_all()
        if ended:
            log.info("agent stopping: ending %d card session(s)", len(ended))
            self.notifier.notify(ended)
        self.notifier.close(wait=True)
        if self.journal is not None:
            # Any notice not delivered stays written down for the next agent.
            self.journal.close()
        self.server.server_close()
        log.info("careid-agent stopped")

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
