"""Card insertions and removals, from PC/SC's SCardGetStatusChange.

A long-lived context, blocked in SCardGetStatusChange with a timeout, wakes the card
watcher the moment pcscd (or Windows' or macOS's smart card service) sees a change; the
timeout bounds how long a newly plugged reader goes unnoticed. The binding comes from
`transport`, which stays the only module importing pyscard.
"""

from __future__ import annotations

import threading
from typing import Any

from careid_agent.errors import CardError
from careid_agent.transport import (
    PCSC_API,
    ReaderInfo,
    error_for_pcsc,
    establish_context,
    reader_names,
)

_MASK = 0xFFFFFFFF


def _rv(code: int) -> int:
    # pyscard returns DWORD-sized codes; normalise so signed and unsigned compare equal.
    return code & _MASK


class ReaderMonitor:
    """Waits for card insertions and removals on one long-lived PC/SC context.

    Holding the context open is also what keeps Debian's socket-activated pcscd (and so
    its insertion counters) alive while the agent runs.
    """

    #: New readers are noticed by listing again; this bounds how long that takes.
    MAX_WAIT = 1.0

    def __init__(self, *, api: Any = None) -> None:
        self._api = PCSC_API if api is None else api
        self._context: int | None = None
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def wait(self, timeout: float) -> list[ReaderInfo]:
        """Every reader's state, once one changed or `timeout` (at most MAX_WAIT) passed.

        Raises a CardError when PC/SC is unavailable; the next call tries again.
        """
        timeout = max(0.0, min(timeout, self.MAX_WAIT))
        if self._closed.is_set():
            return []
        context = self._ensure_context()
        try:
            names = reader_names(self._api, context)
        except CardError:
            self._drop_context()
            raise
        if not names:
            # GetStatusChange needs a reader to watch: look again shortly.
            self._known.clear()
            self._closed.wait(timeout)
            return []
        api = self._api
        query = [(name, self._known.get(name, api.SCARD_STATE_UNAWARE)) for name in names]
        rv, states = api.SCardGetStatusChange(context, int(timeout * 1000), query)
        if _rv(rv) in (_rv(api.SCARD_E_TIMEOUT), _rv(api.SCARD_E_CANCELLED)):
            # Nothing changed: the states we already know are the answer.
            rv, states = api.SCardGetStatusChange(
                context, 0, [(name, api.SCARD_STATE_UNAWARE) for name in names]
            )
        if _rv(rv) != _rv(api.SCARD_S_SUCCESS):
            self._drop_context()
            raise error_for_pcsc(rv, connected=False, api=api)
        readers = []
        known: dict[str, int] = {}
        for name, event_state, atr in states:
            # The "changed" bit must not be fed back, or every later wait returns at once.
            known[str(name)] = event_state & ~api.SCARD_STATE_CHANGED & _MASK
            present = bool(event_state & api.SCARD_STATE_PRESENT)
            readers.append(
                ReaderInfo(
                    name=str(name),
                    card_present=present,
                    atr=bytes(atr) if present else b"",
                    event_count=(event_state >> 16) & 0xFFFF,
                )
            )
        self._known = known
        return readers

    def cancel(self) -> None:
        """Wake a `wait()` in another thread; later waits return at once."""
        self._closed.set()
        with self._lock:
            context = self._context
        if context is not None:
            self._api.SCardCancel(context)

    def close(self) -> None:
        """Release the context (after the waiting thread has finished)."""
        self._closed.set()
        self._drop_context()

    def _ensure_context(self) -> int:
        with self._lock:
            if self._context is None:
                self._context = establish_context(self._api)
                self._known.clear()
            return self._context

    def _drop_context(self) -> None:
        with self._lock:
            context, self._context = self._context, None
        if context is not None:
            self._api.SCardReleaseContext(context)
