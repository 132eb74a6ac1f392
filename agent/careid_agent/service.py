"""What the localhost API does, without HTTP: status, sign a challenge, keep card
sessions, and react to card events.

One card operation runs at a time. The lock covers the whole sign-in, PIN prompt
included (the PC/SC transaction does not: see `card.py`), so a second page asking at the
same moment waits a bounded time and then gets "card busy" rather than a second PIN
prompt stacked on the first.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from careid_agent import __version__
from careid_agent.card import CardIdentity, CardService, PinPolicy
from careid_agent.errors import (
    CardBusyError,
    CardError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    ReaderNotFoundError,
)
from careid_agent.events import EventHub, ServerEvent
from careid_agent.pin import PinEntry
from careid_agent.sessions import CardSession, CardSessions, RemovalNotifier, check_card_session
from careid_agent.signings import Signing, Signings
from careid_agent.transport import ReaderInfo, choose_reader
from careid_agent.watcher import CardEvent, CardEventType
from careid_protocol.piv import Algorithm
from careid_protocol.token import (
    FORMAT,
    AuthToken,
    SignatureAlgorithm,
    digest_to_sign,
    ecdsa_der_to_raw,
)

log = logging.getLogger(__name__)

AGENT_VERSION = f"careid-agent/{__version__}"
#: `GET /v1/status` is polled by pages; it never waits long behind a sign-in.
STATUS_WAIT = 1.0

#: The JOSE algorithm for each card key type (DESIGN.md, "The signed challenge").
JOSE_ALGORITHMS: dict[Algorithm, SignatureAlgorithm] = {
    Algorithm.ECC_P256: SignatureAlgorithm.ES256,
    Algorithm.ECC_P384: SignatureAlgorithm.ES384,
    Algorithm.RSA_2048: SignatureAlgorithm.RS256,
}


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class Signed:
    """A careid-auth:1 token and the handle naming its signing (see `signings.py`)."""

    token: dict[str, str]
    signing: str


def reader_matcher(reader: str | None) -> Callable[[str], bool]:
    """Whether a reader name is one the agent uses (all, or those naming `reader`)."""
    if reader is None:
        return lambda name: True
    wanted = reader.lower()
    return lambda name: name == reader or wanted in name.lower()


class AgentService:
    """The agent's operations, called by the HTTP layer and the card watcher."""

    def __init__(
        self,
        *,
        cards: CardService,
        pin_entry: PinEntry,
        list_readers: Callable[[], list[ReaderInfo]],
        sessions: CardSessions,
        notifier: RemovalNotifier,
        hub: EventHub,
        signings: Signings | None = None,
        reader: str | None = None,
        reader_preference: Sequence[str] = (),
        pin_policy: PinPolicy = PinPolicy.EVERY_SIGNIN,
        card_wait: float = 10.0,
        present_cards: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self._cards = cards
        self._pin = pin_entry
        self._list_readers = list_readers
        self._sessions = sessions
        self._notifier = notifier
        self._hub = hub
        self._preference = tuple(reader_preference)
        self._pin_policy = pin_policy
        self._card_wait = card_wait
        self._present_cards = present_cards
        self._reader = reader
        self.wants_reader = reader_matcher(reader)
        self._lock = threading.Lock()
        self._reported_lock = threading.Lock()
        self._reported: str | None = None
        # Which insertion signed which sign-in: a card session is that card's,
        # whatever is in the reader when the page hands it over.
        self._signings = signings if signings is not None else Signings()

    @contextmanager
    def _card(self, wait: float) -> Iterator[None]:
        if not self._lock.acquire(timeout=wait):
            raise CardBusyError()
        try:
            yield
        finally:
            self._lock.release()

    def _readers(self) -> list[ReaderInfo]:
        """The readers the agent may use; a CardError when PC/SC does not answer, or
        when readers exist but the reader setting names none of them."""
        readers = self._list_readers()
        wanted = [r for r in readers if self.wants_reader(r.name)]
        if readers and not wanted and self._reader is not None:
            raise ReaderNotFoundError(self._reader, [r.name for r in readers])
        return wanted

    def _report(self, error: CardError | None) -> None:
        # Pages poll /v1/status every few seconds: log a reader problem when it starts
        # or changes, not on every poll. The page shows the plain message; the log is
        # where IT support finds the cause.
        problem = None
        if isinstance(error, NoReaderError):
            problem = f"{error.code.value}: {error.detail or error.message}"
        with self._reported_lock:
            previous, self._reported = self._reported, problem
        if problem is not None and problem != previous:
            log.warning("no smartcard reader can be used: %s", problem)
        elif problem is None and previous is not None:
            log.info("a smartcard reader can be used again")

    # -- GET /v1/status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Readers, whether a card is in, and who it names (no PIN needed)."""
        error: CardError | None = None
        try:
            readers = self._readers()
            if not readers:
                raise NoReaderError(detail="PC/SC answers but lists no reader")
        except CardError as exc:
            readers, error = [], exc
        body: dict[str, Any] = {
            "agentVersion": AGENT_VERSION,
            "protocol": FORMAT,
            "pinPolicy": self._pin_policy.value,
            "readers": [{"name": r.name, "cardPresent": r.card_present} for r in readers],
            "cardPresent": any(r.card_present for r in readers),
            "card": None,
        }
        if error is None and not body["cardPresent"]:
            error = NoCardError()
        if error is None:
            error = self._read_card(body)
        self._report(error)
        if error is not None:
            body["cardError"] = {"error": error.code.value, "message": error.message}
        return body

    def _read_card(self, body: dict[str, Any]) -> CardError | None:
        # Fills in `card` (or `cardBusy`); the card's error, if any.
        try:
            with self._card(min(STATUS_WAIT, self._card_wait)):
                status = self._cards.status()
        except CardBusyError:
            body["cardBusy"] = True
        except CardError as exc:
            return exc
        else:
            body["card"] = status.to_json() | {"algorithm": JOSE_ALGORITHMS[status.algorithm].value}
        return None

    # -- POST /v1/authenticate ---------------------------------------------------------

    def authenticate(self, origin: str, challenge: str) -> Signed:
        """Have the card sign `challenge` for `origin`; the careid-auth:1 token, and the
        signing handle the page sends back with its card session."""

        def prepare(identity: CardIdentity) -> tuple[bytes, Any]:
            algorithm = JOSE_ALGORITHMS[identity.algorithm]
            return digest_to_sign(origin, challenge, algorithm), algorithm.hash()

        with self._card(self._card_wait):
            result = self._cards.sign_with(
                prepare, self._pin.provider, pin_pad=self._pin.pin_pad, requester=origin
            )
        handle = self._signings.record(
            origin=origin, insertion_id=result.identity.insertion_id, reader=result.reader
        )
        algorithm = JOSE_ALGORITHMS[result.identity.algorithm]
        signature = result.signature
        if algorithm is not SignatureAlgorithm.RS256:
            signature = ecdsa_der_to_raw(signature, algorithm)
        log.info(
            "signed a challenge for %s with the card of %s in %r",
            origin,
            result.identity.uuid or "<no UUID>",
            result.reader,
        )
        token = AuthToken(
            certificate=result.identity.certificate_der,
            algorithm=algorithm,
            signature=signature,
            agent_version=AGENT_VERSION,
        ).to_json()
        return Signed(token=token, signing=handle)

    # -- POST /v1/card-sessions --------------------------------------------------------

    def add_card_session(
        self, origin: str, card_session: object, signing: object = None
    ) -> dict[str, str]:
        """Keep (origin, the card that signed, S) until that card leaves.

        `signing` is the handle `authenticate` gave this sign-in's page: the session is
        that signing's card's, not whichever card is in the reader now (another person's
        card put in meanwhile must not keep this person's session alive). A handle is
        used once; an unknown, expired or other origin's handle, a card that has left,
        or (for a page that sends no handle, `None`) signings by more than one card for
        this origin end the session at once. A session already kept is answered again
        as it stands (a page reloaded).
        """
        reference = check_card_session(card_session)
        kept = self._sessions.find(origin, reference)
        if kept is not None:
            return {"cardSession": reference, "reader": kept.reader}
        signed: Signing | None
        if signing is None:
            signed = self._signings.claim_sole(origin)
        else:
            signed = self._signings.claim(origin, signing)
        session = CardSession(
            origin=origin,
            insertion_id=signed.insertion_id if signed else "",
            reader=signed.reader if signed else "",
            card_session=reference,
        )
        try:
            readers = self._readers()
            choose_reader(readers, None, self._preference)  # NoCardError when none is in
        except CardError:
            # The card that signed in has already gone: the session must end now.
            self._notifier.notify([session])
            raise
        present = {r.insertion_id for r in readers if r.insertion_id is not None}
        if signed is None or signed.insertion_id not in present:
            log.info("no card in the readers signed this card session for %s: it ends", origin)
            self._notifier.notify([session])
            raise CardRemovedError()
        if not self._sessions.add(session):
            self._notifier.notify([session])
            raise CardRemovedError()
        return {"cardSession": reference, "reader": signed.reader}

    # -- the card watcher and GET /v1/events -------------------------------------------

    def on_card_event(self, event: CardEvent) -> None:
        """A card went in or out: update the cache, end its sessions, tell the pages."""
        if event.type is CardEventType.INSERTED:
            # Seen again (PC/SC came back, or a reader without an insertion counter
            # whose id repeats): its earlier removal no longer blocks its sessions.
            self._sessions.card_inserted(event.insertion_id)
        if event.type is CardEventType.REMOVED:
            self._cards.forget(event.insertion_id)
            ended = self._sessions.card_removed(event.insertion_id)
            if ended:
                log.info(
                    "card removed from %r: ending %d card session(s)", event.reader, len(ended)
                )
                self._notifier.notify(ended)
        self._hub.publish(
            ServerEvent(
                name=event.type.value, data={"reader": event.reader, "at": _rfc3339(event.at)}
            )
        )

    def current_events(self) -> list[ServerEvent]:
        """A `card-inserted` for each card already in, sent first on a new event stream."""
        now = _rfc3339(dt.datetime.now(dt.UTC))
        return [
            ServerEvent(
                name=CardEventType.INSERTED.value,
                data={"reader": reader, "at": now, "initial": True},
            )
            for reader in sorted(self._present_cards())
        ]
