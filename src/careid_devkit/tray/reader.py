"""`CardTray`: the demo cards and one virtual reader; insert one card, remove it.

The tray serves the inserted card itself, in this process, through vsmartcard's vpcd
(`VpcdCardClient`), so what the agent sees is a card arriving in and leaving a real
pcscd reader. The card profile is read from disk at each insertion and its retry
counters are written back as they change: a PIN blocked in the demo stays blocked, and
a test may set the counters in the file while the card is out. DEMO/TEST MATERIAL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from careid_devkit.cardsim.applet import PivApplet
from careid_devkit.cardsim.vpcd import DEFAULT_PORT, VpcdCardClient
from careid_devkit.codes import DevkitCode, message_for
from careid_devkit.tray.model import TrayCard
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

DEFAULT_READER = "Virtual PCD 00 00"
#: vpcd asks for the ATR every 400 ms (PIV-NOTES); a card it has not seen in a few
#: seconds is not coming.
INSERT_TIMEOUT = 10.0
#: pcscd's own view lags the socket by one vpcd poll; wait that out, with a margin.
READER_SETTLE_TIMEOUT = 3.0
_POLL = 0.05

#: Whether the reader holds a card as pcscd sees it (None: cannot tell).
ReaderState = Callable[[], bool | None]


class TrayError(Exception):
    """The tray refused or could not do something; `code` is stable."""

    def __init__(self, code: DevkitCode | ErrorCode, detail: str, *, status: int) -> None:
        self.code = code
        self.detail = detail
        self.status = status
        self.message = message_for(code)
        super().__init__(f"{detail} — {self.message}")


@dataclass(frozen=True, kw_only=True)
class CardView:
    """One card as the tray shows it."""

    card: TrayCard
    inserted: bool
    pin_tries_left: int | None
    pin_blocked: bool

    def to_json(self) -> dict[str, object]:
        """The card in `GET /cards`."""
        return {
            "id": self.card.card_id,
            "uuid": self.card.uuid,
            "name": self.card.name,
            "kind": self.card.kind.value,
            "state": self.card.kind.description,
            "note": self.card.note,
            "inserted": self.inserted,
            "pinTriesLeft": self.pin_tries_left,
            "pinBlocked": self.pin_blocked,
        }


def pcsc_reader_state(reader: str) -> ReaderState:
    """Ask pcscd (through pyscard) whether `reader` holds a card."""

    def state() -> bool | None:
        try:
            from careid_agent.transport import list_readers

            readers = {info.name: info.card_present for info in list_readers()}
        except Exception as exc:  # noqa: BLE001 - pyscard missing or pcscd gone: unknown
            log.debug("cannot ask pcscd about %s: %s", reader, exc)
            return None
        return readers.get(reader)

    return state


class CardTray:
    """The demo cards and the one reader they take turns in."""

    def __init__(
        self,
        cards: Sequence[TrayCard],
        *,
        reader: str = DEFAULT_READER,
        vpcd_host: str = "127.0.0.1",
        vpcd_port: int = DEFAULT_PORT,
        reader_state: ReaderState | None = None,
        insert_timeout: float = INSERT_TIMEOUT,
        settle_timeout: float = READER_SETTLE_TIMEOUT,
    ) -> None:
        self._cards = {card.card_id: card for card in cards}
        if len(self._cards) != len(cards):
            raise ValueError("two tray cards share an id")
        self.reader = reader
        self._vpcd = (vpcd_host, vpcd_port)
        self._reader_state = reader_state
        self._insert_timeout = insert_timeout
        self._settle_timeout = settle_timeout
        self._lock = threading.Lock()
        self._current: tuple[TrayCard, VpcdCardClient] | None = None

    @property
    def cards(self) -> tuple[TrayCard, ...]:
        """Every card, in tray order."""
        return tuple(self._cards.values())

    def card(self, card_id: str) -> TrayCard:
        """The card with this id, or TrayError (404)."""
        found = self._cards.get(card_id)
        if found is None:
            raise TrayError(
                DevkitCode.DEVKIT_TRAY_CARD_UNKNOWN, f"no card {card_id[:64]!r}", status=404
            )
        return found

    @property
    def inserted(self) -> TrayCard | None:
        """The card in the reader, if any."""
        current = self._current
        return current[0] if current else None

    def views(self) -> list[CardView]:
        """Every card with its state now (counters read from the profiles)."""
        current = self._current
        views = []
        for card in self._cards.values():
            if current is not None and current[0] is card:
                profile = current[1].applet.profile
            else:
                try:
                    profile = card.load()
                except (OSError, ValueError) as exc:
                    log.warning("cannot read the profile of %s: %s", card.card_id, exc)
                    views.append(
                        CardView(card=card, inserted=False, pin_tries_left=None, pin_blocked=False)
                    )
                    continue
            views.append(
                CardView(
                    card=card,
                    inserted=current is not None and current[0] is card,
                    pin_tries_left=profile.pin_retries_left,
                    pin_blocked=profile.pin_retries_left == 0,
                )
            )
        return views

    def insert(self, card_id: str) -> TrayCard:
        """Put this card in the reader, taking out the one there first."""
        card = self.card(card_id)
        with self._lock:
            if self._current is not None:
                if self._current[0] is card:
                    return card
                self._remove_locked()
            try:
                profile = card.load()
            except (OSError, ValueError) as exc:
                raise TrayError(
                    DevkitCode.DEVKIT_CARD_PROFILE_INVALID,
                    f"{card.profile_path}: {exc}",
                    status=500,
                ) from exc
            applet = PivApplet(profile, on_counters_changed=card.save)
            client = VpcdCardClient(applet, host=self._vpcd[0], port=self._vpcd[1])
            client.start()
            if not client.wait_inserted(self._insert_timeout):
                client.stop()
                raise TrayError(
                    DevkitCode.DEVKIT_TRAY_READER_UNAVAILABLE,
                    f"vpcd at {self._vpcd[0]}:{self._vpcd[1]} did not take the card",
                    status=503,
                )
            self._current = (card, client)
            self._settle(present=True)
        log.info("inserted %s (%s, %s) into %r", card.card_id, card.name, card.kind, self.reader)
        return card

    def remove(self) -> TrayCard | None:
        """Take the card out of the reader; the card that was in, or None."""
        with self._lock:
            return self._remove_locked()

    def close(self) -> None:
        """Take out any card (the tray is shutting down)."""
        self.remove()

    def _remove_locked(self) -> TrayCard | None:
        if self._current is None:
            return None
        card, client = self._current
        self._current = None
        client.stop()
        # Wait until pcscd has seen the reader empty: a card put in straight away must
        # be a new insertion to the agent, not a card that never left.
        self._settle(present=False)
        log.info("removed %s from %r", card.card_id, self.reader)
        return card

    def _settle(self, *, present: bool) -> None:
        if self._reader_state is None:
            return
        deadline = time.monotonic() + self._settle_timeout
        while time.monotonic() < deadline:
            state = self._reader_state()
            if state is None or state is present:
                return
            time.sleep(_POLL)
        log.warning(
            "pcscd did not report %r %s in time", self.reader, present and "full" or "empty"
        )
