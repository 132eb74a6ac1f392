"""PC/SC transport: the only module that talks to pyscard.

Everything above this layer sees a `CardConnection` (`transmit(apdu) -> (data, sw)`, a
transaction, `close()`), so unit tests drive the same code with an in-process card.
We use pyscard's thin `smartcard.scard` binding rather than its object layer: it gives
direct control of the disposition (`SCARD_LEAVE_CARD` — pyscard's `disconnect()`
unpowers the card, which logs the user out of every other program) and of
`SCardGetStatusChange`, whose event counter tells one card insertion from the next.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from smartcard import scard

from careid_agent.errors import (
    CardCommunicationError,
    CardError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    PcscUnavailableError,
    ReaderAmbiguousError,
    ReaderBusyError,
    ReaderNotFoundError,
)
from careid_protocol.errors import ErrorCode, message_for

log = logging.getLogger(__name__)

#: The PC/SC binding: other modules take it from here, so only this one imports pyscard.
PCSC_API: Any = scard
_MASK = 0xFFFFFFFF
#: How long a failed APDU waits for PC/SC to report a removal before calling it a read
#: failure.
_REMOVAL_GRACE = 1.5
#: How long `connect()` and its connections wait for another program's PC/SC
#: transaction on the card to end, unless told otherwise.
DEFAULT_TRANSACTION_WAIT = 10.0
#: At most this many abandoned waits at once (each holds a thread and a PC/SC context
#: until the other program lets go): past it, "reader busy" at once.
MAX_ABANDONED_WAITS = 4

_abandoned_lock = threading.Lock()
_abandoned_waits = 0

T = TypeVar("T")


def abandoned_pcsc_waits() -> int:
    """How many PC/SC calls the agent has given up waiting for are still blocked."""
    with _abandoned_lock:
        return _abandoned_waits


class PcscWaitAbandoned(ReaderBusyError):
    """A PC/SC call waited longer than allowed for another program's transaction. The
    call still blocks on a thread of its own, which owns the call's handle and context
    from now on and releases them when PC/SC answers."""


def _within(wait: float | None, call: Callable[[], T], late: Callable[[T | None], None]) -> T:
    """`call()`, given up after `wait` seconds (None: no limit) with `PcscWaitAbandoned`.

    pcsc-lite makes `SCardConnect` and `SCardBeginTransaction` wait, for as long as
    another program holds a transaction on the card, and nothing cancels that wait: it
    even holds the context's lock, so releasing the context would wait too. So the call
    runs on a thread; given up, that thread later hands what it got to `late` (None if
    the call raised), which must release it.
    """
    global _abandoned_waits
    if wait is None:
        return call()
    with _abandoned_lock:
        if _abandoned_waits >= MAX_ABANDONED_WAITS:
            raise ReaderBusyError(
                detail=f"{_abandoned_waits} earlier PC/SC calls are still waiting for"
                " another program to release the card"
            )
    answered: list[tuple[T | None, BaseException | None]] = []
    gave_up = False
    lock = threading.Lock()

    def run() -> None:
        global _abandoned_waits
        result: T | None = None
        error: BaseException | None = None
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, or logged
            error = exc
        with lock:
            answered.append((result, error))
            abandoned = gave_up
        if not abandoned:
            return
        try:
            late(result)
            log.info("a PC/SC call given up on has ended; its connection is closed")
        except Exception:  # noqa: BLE001 - nobody is left to tell
            log.exception("closing a PC/SC call given up on failed")
        finally:
            with _abandoned_lock:
                _abandoned_waits -= 1

    waiter = threading.Thread(target=run, name="pcsc-bounded-call", daemon=True)
    waiter.start()
    waiter.join(wait)
    with lock:
        if answered:
            result, error = answered[0]
            if error is not None:
                raise error
            return cast(T, result)
        gave_up = True
        with _abandoned_lock:
            _abandoned_waits += 1
    log.warning("another program has held the card for over %.1f s; answered reader_busy", wait)
    raise PcscWaitAbandoned(
        detail=f"another program held a PC/SC transaction on the card for over {wait:g} s"
    )


class ApduTransport(Protocol):
    """Anything that exchanges one APDU with a card: PC/SC, vpcd, an in-process card."""

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU; answer (response data, status word as an int)."""
        ...


class CardConnection(ApduTransport, Protocol):
    """A connection to the card in one reader, as the card layer needs it."""

    @property
    def reader(self) -> str:
        """The reader's PC/SC name."""
        ...

    @property
    def atr(self) -> bytes:
        """The card's answer to reset."""
        ...

    @property
    def insertion_id(self) -> str:
        """Identifies this insertion of this card: it changes when a card is re-inserted."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """A context manager holding the card exclusively (PC/SC transaction)."""
        ...

    def close(self) -> None:
        """Release the connection, leaving the card powered and its state alone."""
        ...


@dataclass(frozen=True, kw_only=True)
class ReaderInfo:
    """One reader as PC/SC reports it right now."""

    name: str
    card_present: bool
    atr: bytes
    event_count: int
    """pcsc-lite's per-reader count of card insertions and removals (0 where unsupported)."""

    @property
    def insertion_id(self) -> str | None:
        """The card's insertion identity, or None when the reader is empty."""
        if not self.card_present:
            return None
        return insertion_id(self.name, self.event_count, self.atr)


def insertion_id(reader: str, event_count: int, atr: bytes) -> str:
    """One insertion of one card in one reader.

    pcsc-lite (and Windows) keep a per-reader event counter in the high 16 bits of
    `dwEventState`, bumped on every insertion and removal; with the ATR and the reader name
    it tells a new insertion from the same one. The counter restarts at 0 with pcscd,
    which Debian's socket-activated pcscd does after 60 s without clients; and where a
    platform reports no counter the identity degrades to reader + ATR. So the long-running
    agent should keep a PC/SC context open (its card watcher does) and call
    `CardService.forget()` on removal. A stale cache cannot sign in the wrong person — the
    broker verifies the signature against the certificate sent — but it would fail them.
    """
    return f"{reader}#{event_count}#{atr.hex()}"


def _rv(code: int) -> int:
    # pyscard returns DWORD-sized codes; normalise so signed and unsigned compare equal.
    return code & _MASK


_NO_SERVICE = {_rv(scard.SCARD_E_NO_SERVICE), _rv(scard.SCARD_E_SERVICE_STOPPED)}
_NO_READER = {
    _rv(scard.SCARD_E_NO_READERS_AVAILABLE),
    _rv(scard.SCARD_E_UNKNOWN_READER),
    _rv(scard.SCARD_E_READER_UNAVAILABLE),
    *_NO_SERVICE,
}
_CARD_GONE = {_rv(scard.SCARD_E_NO_SMARTCARD), _rv(scard.SCARD_W_REMOVED_CARD)}
_BUSY = {_rv(scard.SCARD_E_SHARING_VIOLATION), _rv(scard.SCARD_E_TIMEOUT)}

_RESET_MESSAGE = (
    "Another program reset your smartcard before sign-in finished. Try again; if it keeps"
    " happening, close other programs that use the card."
)


def error_for_pcsc(
    code: int, *, connected: bool, api: Any = scard, platform: str = sys.platform
) -> CardError:
    """The typed error for a PC/SC return code, the code itself in its `detail`.

    `connected` says whether a card handle existed: a missing card is "no card" when
    connecting and "card removed" once an operation has started.
    """
    rv = _rv(code)
    text = api.SCardGetErrorMessage(code)
    detail = f"PC/SC: {str(text).rstrip('. ')} (0x{rv:08X})"
    log.debug("%s, connected=%s", detail, connected)
    if rv in _BUSY:
        return ReaderBusyError(detail=detail)
    if rv == _rv(scard.SCARD_W_RESET_CARD):
        # The PIN state is gone with the reset, so the operation cannot simply continue.
        return CardRemovedError(_RESET_MESSAGE, detail=detail)
    if rv in _CARD_GONE:
        return CardRemovedError(detail=detail) if connected else NoCardError(detail=detail)
    if rv in _NO_READER and connected:
        # A reader unplugged mid-operation took the card with it.
        return CardRemovedError(detail=detail)
    if rv in _NO_SERVICE:
        if platform == "win32":
            # Windows stops its Smart Card service when the last reader is unplugged
            # and starts it when one arrives: there, plugging the reader in is the fix.
            return PcscUnavailableError(
                message_for(ErrorCode.NO_READER),
                detail=f"{detail}: the Smart Card service is not running (Windows stops"
                " it while no reader is plugged in)",
            )
        return PcscUnavailableError(
            detail=f"{detail}: the PC/SC service (pcscd) is not running or not reachable"
        )
    if rv in _NO_READER:
        return NoReaderError(detail=detail)
    return CardCommunicationError(detail=detail)


class PcscConnection:
    """A shared PC/SC connection to the card in one reader (use `connect()`)."""

    def __init__(
        self,
        *,
        api: Any,
        context: int,
        handle: int,
        protocol: int,
        reader: str,
        atr: bytes,
        insertion_id: str,
        transaction_wait: float | None = None,
    ) -> None:
        self._api = api
        self._context = context
        self._handle = handle
        self._pci = api.SCARD_PCI_T0 if protocol == api.SCARD_PROTOCOL_T0 else api.SCARD_PCI_T1
        self._open = True
        self._in_transaction = False
        self._transaction_wait = transaction_wait
        self.reader = reader
        self.atr = atr
        self.insertion_id = insertion_id

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one APDU (no GET RESPONSE here: pcsc-lite does not do it on T=1)."""
        if not self._open:
            raise CardCommunicationError()
        command = list(apdu)
        try:
            rv, response = self._api.SCardTransmit(self._handle, self._pci, command)
        finally:
            command.clear()  # may hold a PIN; the caller wipes its own buffers
        if _rv(rv) != _rv(self._api.SCARD_S_SUCCESS):
            error = error_for_pcsc(rv, connected=True, api=self._api)
            if type(error) is CardCommunicationError:
                # A card pulled mid-APDU fails as a communication error or as a
                # removal depending on timing; the person removed it either way.
                error = self._error_after_bad_response()
            raise error
        if len(response) < 2:
            # A card pulled mid-APDU can come back as "success" with no status word
            # (vpcd does this); ask PC/SC whether the card is still there.
            raise self._error_after_bad_response()
        return bytes(response[:-2]), (response[-2] << 8) | response[-1]

    def _error_after_bad_response(self) -> CardError:
        # pcscd notices a removal on its next poll of the reader (vpcd: 400 ms), so wait
        # briefly for the reader's state to change before calling it a read failure.
        current = self._api.SCARD_STATE_PRESENT
        deadline = time.monotonic() + _REMOVAL_GRACE
        while time.monotonic() < deadline:
            rv, states = self._api.SCardGetStatusChange(
                self._context, 100, [(self.reader, current)]
            )
            if _rv(rv) == _rv(self._api.SCARD_E_TIMEOUT):
                continue
            if _rv(rv) != _rv(self._api.SCARD_S_SUCCESS) or not states:
                return error_for_pcsc(rv, connected=True, api=self._api)
            _, event_state, atr = states[0]
            if not event_state & self._api.SCARD_STATE_PRESENT:
                return CardRemovedError()
            if insertion_id(self.reader, (event_state >> 16) & 0xFFFF, bytes(atr)) != (
                self.insertion_id
            ):
                return CardRemovedError()  # out and back in: not the card we started with
            current = event_state & ~self._api.SCARD_STATE_CHANGED
        return CardCommunicationError()

    def control_code(self, function: int) -> int:
        """The platform's reader control code for a function number (SCARD_CTL_CODE:
        0x42000000 + n on pcsc-lite and macOS, CTL_CODE(0x31, n, ...) on Windows)."""
        return int(self._api.SCARD_CTL_CODE(function))

    def control(self, code: int, data: bytes | bytearray = b"") -> bytes:
        """SCardControl: a command to the reader itself (PC/SC Part 10 features)."""
        if not self._open:
            raise CardCommunicationError()
        command = list(data)
        try:
            rv, response = self._api.SCardControl(self._handle, code, command)
        finally:
            command.clear()
        if _rv(rv) != _rv(self._api.SCARD_S_SUCCESS):
            raise error_for_pcsc(rv, connected=True, api=self._api)
        return bytes(response)

    def begin_transaction(self) -> None:
        """Take the card exclusively until `end_transaction()`.

        Waits at most `transaction_wait` seconds for another program's transaction to
        end (`_within`); given up, the connection belongs to the abandoned call, which
        gives the card straight back when it gets it and closes the connection.
        """
        if not self._open:
            raise CardCommunicationError()
        try:
            rv = _within(
                self._transaction_wait,
                lambda: self._api.SCardBeginTransaction(self._handle),
                self._release_after_late_begin,
            )
        except PcscWaitAbandoned:
            self._open = False  # close() is the abandoned call's to do
            raise
        if _rv(rv) != _rv(self._api.SCARD_S_SUCCESS):
            raise error_for_pcsc(rv, connected=True, api=self._api)
        self._in_transaction = True

    def _release_after_late_begin(self, rv: int | None) -> None:
        if rv is not None and _rv(rv) == _rv(self._api.SCARD_S_SUCCESS):
            self._api.SCardEndTransaction(self._handle, self._api.SCARD_LEAVE_CARD)
        self._api.SCardDisconnect(self._handle, self._api.SCARD_LEAVE_CARD)
        self._api.SCardReleaseContext(self._context)

    def end_transaction(self) -> None:
        """Release the card, leaving it powered (the PIN state stays as the card has it)."""
        if not self._in_transaction:
            return
        self._in_transaction = False
        rv = self._api.SCardEndTransaction(self._handle, self._api.SCARD_LEAVE_CARD)
        if _rv(rv) != _rv(self._api.SCARD_S_SUCCESS):
            # The work inside the transaction is done (or already failed); a card pulled
            # at this point must not turn a finished operation into an error.
            log.debug("SCardEndTransaction: 0x%08X", _rv(rv))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the card for the APDUs of one operation."""
        self.begin_transaction()
        try:
            yield
        finally:
            self.end_transaction()

    def close(self) -> None:
        """Disconnect with SCARD_LEAVE_CARD and release the PC/SC context (idempotent;
        after a transaction wait given up on, the abandoned call does it)."""
        if not self._open:
            return
        self._open = False
        self.end_transaction()
        rv = self._api.SCardDisconnect(self._handle, self._api.SCARD_LEAVE_CARD)
        if _rv(rv) != _rv(self._api.SCARD_S_SUCCESS):
            log.debug("SCardDisconnect: 0x%08X", _rv(rv))
        self._api.SCardReleaseContext(self._context)

    def __enter__(self) -> PcscConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def establish_context(api: Any) -> int:
    """A PC/SC context (user scope); the typed error when the service is unavailable."""
    rv, context = api.SCardEstablishContext(api.SCARD_SCOPE_USER)
    if _rv(rv) != _rv(api.SCARD_S_SUCCESS):
        # Windows stops its smart card service when the last reader goes away, so "no
        # service" is how an empty reader list often looks there.
        raise error_for_pcsc(rv, connected=False, api=api)
    return int(context)


def reader_names(api: Any, context: int) -> list[str]:
    """The names of the readers PC/SC knows; empty when there is none."""
    rv, names = api.SCardListReaders(context, [])
    if _rv(rv) == _rv(api.SCARD_E_NO_READERS_AVAILABLE):
        return []
    if _rv(rv) != _rv(api.SCARD_S_SUCCESS):
        raise error_for_pcsc(rv, connected=False, api=api)
    return [str(name) for name in names]


def _reader_states(api: Any, context: int, names: Sequence[str]) -> list[ReaderInfo]:
    if not names:
        return []
    query = [(name, api.SCARD_STATE_UNAWARE) for name in names]
    rv, states = api.SCardGetStatusChange(context, 0, query)
    if _rv(rv) != _rv(api.SCARD_S_SUCCESS):
        raise error_for_pcsc(rv, connected=False, api=api)
    readers = []
    for name, event_state, atr in states:
        present = bool(event_state & api.SCARD_STATE_PRESENT)
        readers.append(
            ReaderInfo(
                name=str(name),
                card_present=present,
                atr=bytes(atr) if present else b"",
                event_count=(event_state >> 16) & 0xFFFF,
            )
        )
    return readers


def scan_readers(*, api: Any = scard) -> list[ReaderInfo]:
    """Every reader and whether it holds a card; empty when PC/SC answers with no reader.

    Raises PcscUnavailableError when the PC/SC service does not answer, so callers can
    tell "the service is down" from "no reader is plugged in".
    """
    context = establish_context(api)
    try:
        return _reader_states(api, context, reader_names(api, context))
    finally:
        api.SCardReleaseContext(context)


def list_readers(*, api: Any = scard) -> list[ReaderInfo]:
    """Every reader and whether it holds a card; empty when there is no reader (or service)."""
    try:
        return scan_readers(api=api)
    except NoReaderError:
        return []


def match_readers(readers: Sequence[ReaderInfo], reader: str) -> list[ReaderInfo]:
    """The readers a reader setting names: the exact name, else each case-insensitive
    substring match (so `--reader "PCD 00 01"` works)."""
    exact = [r for r in readers if r.name == reader]
    return exact or [r for r in readers if reader.lower() in r.name.lower()]


def choose_reader(
    readers: Sequence[ReaderInfo], reader: str | None, preference: Sequence[str] = ()
) -> ReaderInfo:
    """The reader to use: the named one, else the first with a card, preferred names first.

    A name must match one reader (`match_readers`). Preferences are substrings tried in
    order.
    """
    if not readers:
        raise NoReaderError(detail="PC/SC answers but lists no reader")
    if reader is not None:
        matches = match_readers(readers, reader)
        if not matches:
            raise ReaderNotFoundError(reader, [r.name for r in readers])
        if len(matches) > 1:
            raise ReaderAmbiguousError(reader, [r.name for r in matches])
        if not matches[0].card_present:
            raise NoCardError(detail=f"no card in {matches[0].name!r}")
        return matches[0]
    with_card = [r for r in readers if r.card_present]
    if not with_card:
        raise NoCardError(detail=f"none of the {len(readers)} reader(s) holds a card")
    for wanted in preference:
        for candidate in with_card:
            if wanted.lower() in candidate.name.lower():
                return candidate
    return with_card[0]


def connect(
    reader: str | None = None,
    *,
    preference: Sequence[str] = (),
    api: Any = scard,
    transaction_wait: float | None = DEFAULT_TRANSACTION_WAIT,
) -> PcscConnection:
    """Connect (shared) to the card in `reader`, or in the first reader holding a card.

    `transaction_wait`: how long a transaction waits for another program's to end
    (None: as long as it takes, as PC/SC itself does).
    """
    context = establish_context(api)
    try:
        chosen = choose_reader(
            _reader_states(api, context, reader_names(api, context)), reader, preference
        )
    except BaseException:
        api.SCardReleaseContext(context)
        raise

    def release_after_late_connect(answer: tuple[int, int, int] | None) -> None:
        if answer is not None and _rv(answer[0]) == _rv(api.SCARD_S_SUCCESS):
            api.SCardDisconnect(answer[1], api.SCARD_LEAVE_CARD)
        api.SCardReleaseContext(context)

    try:
        # pcscd makes a connection wait while another program holds a transaction.
        rv, handle, protocol = _within(
            transaction_wait,
            lambda: api.SCardConnect(
                context,
                chosen.name,
                api.SCARD_SHARE_SHARED,
                api.SCARD_PROTOCOL_T0 | api.SCARD_PROTOCOL_T1,
            ),
            release_after_late_connect,
        )
    except PcscWaitAbandoned:
        raise  # the context is the abandoned call's to release
    except BaseException:
        api.SCardReleaseContext(context)
        raise
    try:
        if _rv(rv) != _rv(api.SCARD_S_SUCCESS):
            raise error_for_pcsc(rv, connected=False, api=api)
        try:
            # Read the state again now that we hold a handle: should the card have been
            # swapped since the listing, the identity must be the one we are talking to.
            (current,) = _reader_states(api, context, [chosen.name])
            if not current.card_present:
                raise NoCardError()
        except BaseException:
            api.SCardDisconnect(handle, api.SCARD_LEAVE_CARD)
            raise
    except BaseException:
        api.SCardReleaseContext(context)
        raise
    log.debug("connected to %r (protocol %d, ATR %s)", chosen.name, protocol, current.atr.hex())
    return PcscConnection(
        api=api,
        context=context,
        handle=handle,
        protocol=protocol,
        reader=chosen.name,
        atr=current.atr,
        transaction_wait=transaction_wait,
        insertion_id=insertion_id(chosen.name, current.event_count, current.atr),
    )
