"""Test doubles for the agent's card layer: scripted APDU vectors and an in-process reader.

`ScriptedConnection` replays recorded exchanges (command hex → response hex) and fails on
any command it did not expect; `ReaderConnection` puts the devkit's in-process virtual
card behind the agent's `CardConnection` protocol (reader name, insertion id,
transactions, close) and can simulate the card being pulled out. `FakeScard` stands in
for pyscard's `smartcard.scard` below the transport, answering like pcsc-lite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cardsim_profiles import make_test_profile
from smartcard import scard

from careid_agent.errors import CardRemovedError, NoCardError, NoReaderError
from careid_agent.transport import ReaderInfo
from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.cardsim import InProcessConnection, PivApplet

__all__ = [
    "OK",
    "FakeScard",
    "KeyAlgorithm",
    "ReaderConnection",
    "ScriptedConnection",
    "VirtualReader",
    "h",
    "make_test_profile",
]

PIN = "246810"
OK: int = scard.SCARD_S_SUCCESS


def h(text: str) -> bytes:
    """Bytes from spaced hex, as APDUs are written in the specs."""
    return bytes.fromhex(text)


Step = tuple[str, str | Callable[[bytes], bytes]]


class ScriptedConnection:
    """Replays (command hex, response hex including SW) pairs in order.

    A response may be a function of the command, for answers that depend on it (a
    signature over whatever digest the test chose).
    """

    def __init__(self, steps: Sequence[Step], *, reader: str = "Scripted Reader 00") -> None:
        self.steps = list(steps)
        self.sent: list[bytes] = []
        self.reader = reader
        self.atr = h("3B 81 01 80 00")
        self.insertion_id = f"{reader}#1#{self.atr.hex()}"
        self.transactions = 0
        self.closed = False

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        assert isinstance(apdu, bytes)
        self.sent.append(apdu)
        assert self.steps, f"unexpected APDU {apdu.hex().upper()}"
        expected, response = self.steps.pop(0)
        assert apdu == h(expected), f"sent {apdu.hex().upper()}, expected {expected}"
        raw = response(apdu) if callable(response) else h(response)
        return raw[:-2], int.from_bytes(raw[-2:], "big")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.transactions += 1
        yield

    def close(self) -> None:
        self.closed = True

    def done(self) -> bool:
        return not self.steps


@dataclass
class VirtualReader:
    """A reader slot holding the in-process virtual card; `insert` models a new insertion."""

    name: str = "Virtual Test Reader 00"
    card: InProcessConnection | None = None
    events: int = 0
    connections: list[ReaderConnection] = field(default_factory=list)

    def insert(self, profile: CardProfile) -> PivApplet:
        self.events += 1
        applet = PivApplet(profile)
        self.card = InProcessConnection(applet)
        return applet

    def remove(self) -> None:
        self.events += 1
        self.card = None

    def connect(self, reader: str | None = None) -> ReaderConnection:
        if reader is not None and reader not in self.name:
            raise NoReaderError()
        if self.card is None:
            raise NoCardError()
        connection = ReaderConnection(self, self.card)
        self.connections.append(connection)
        return connection

    def info(self) -> ReaderInfo:
        """The reader as PC/SC lists it."""
        atr = self.card.atr if self.card is not None else b""
        return ReaderInfo(
            name=self.name, card_present=self.card is not None, atr=atr, event_count=self.events
        )

    @property
    def apdus(self) -> int:
        """Commands the current card has received."""
        assert self.card is not None
        return self.card.counters.commands


class ReaderConnection:
    """The agent's CardConnection over an InProcessConnection."""

    def __init__(self, reader: VirtualReader, card: InProcessConnection) -> None:
        self._reader = reader
        self._card = card
        self.reader = reader.name
        self.atr = card.atr
        self.insertion_id = f"{reader.name}#{reader.events}#{card.atr.hex()}"
        self.in_transaction = False
        self.transactions = 0
        self.closed = False
        self.commands: list[bytes] = []
        #: Pull the card out when this many more APDUs have been sent (None: never).
        self.remove_after: int | None = None

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        assert not self.closed, "transmit after close"
        if self.remove_after is not None:
            if self.remove_after == 0:
                self._reader.remove()
            self.remove_after -= 1
        if self._reader.card is not self._card:
            raise CardRemovedError()
        self.commands.append(bytes(apdu))
        return self._card.transmit(apdu)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        assert not self.in_transaction, "nested transaction"
        self.in_transaction = True
        self.transactions += 1
        try:
            yield
        finally:
            self.in_transaction = False

    def close(self) -> None:
        self.closed = True


class FakeScard:
    """Just enough of pyscard's `smartcard.scard` module, recording every call."""

    def __init__(self, readers: dict[str, tuple[int, list[int]]]) -> None:
        # name -> (dwEventState, ATR)
        self.readers = readers
        self.calls: list[tuple[Any, ...]] = []
        self.establish_rv: int = OK
        self.connect_rv: int = OK
        self.transmit_rv: int = OK
        self.begin_rv: int = OK
        self.response = [0x90, 0x00]
        self.released = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(scard, name)  # constants

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]:
        self.calls.append(("establish", scope))
        return self.establish_rv, 1234

    def SCardReleaseContext(self, context: int) -> int:
        self.released += 1
        return OK

    def SCardListReaders(self, context: int, groups: list[str]) -> tuple[int, list[str]]:
        if not self.readers:
            return scard.SCARD_E_NO_READERS_AVAILABLE, []
        return OK, list(self.readers)

    def SCardGetStatusChange(
        self, context: int, timeout: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        self.calls.append(("status", timeout, [s[1] for s in states]))
        return OK, [(name, *self.readers[name]) for name, _ in states]

    def SCardConnect(
        self, context: int, name: str, share: int, protocols: int
    ) -> tuple[int, int, int]:
        self.calls.append(("connect", name, share, protocols))
        return self.connect_rv, 777, scard.SCARD_PROTOCOL_T1

    def SCardTransmit(self, handle: int, pci: int, apdu: list[int]) -> tuple[int, list[int]]:
        self.calls.append(("transmit", pci, bytes(apdu)))
        return self.transmit_rv, list(self.response) if self.transmit_rv == OK else []

    def SCardBeginTransaction(self, handle: int) -> int:
        self.calls.append(("begin",))
        return self.begin_rv

    def SCardEndTransaction(self, handle: int, disposition: int) -> int:
        self.calls.append(("end", disposition))
        return OK

    def SCardDisconnect(self, handle: int, disposition: int) -> int:
        self.calls.append(("disconnect", disposition))
        return OK

    def SCardGetErrorMessage(self, code: int) -> str:
        return str(scard.SCardGetErrorMessage(code))
