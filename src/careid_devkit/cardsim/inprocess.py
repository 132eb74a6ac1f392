"""A card connection without PC/SC: the agent's unit tests talk to the applet directly."""

from __future__ import annotations

import threading

from careid_devkit.cardsim.apdu import ApduCounters
from careid_devkit.cardsim.applet import PivApplet


class InProcessConnection:
    """`transmit(apdu) -> (data, sw)` straight into a `PivApplet`, as pcsc-lite would on T=1.

    Like pcsc-lite on T=1 it does no GET RESPONSE of its own: a 61xx reaches the caller.
    """

    def __init__(self, applet: PivApplet) -> None:
        self._applet = applet
        self._lock = threading.Lock()
        self._counters = ApduCounters()

    @property
    def applet(self) -> PivApplet:
        """The card behind this connection."""
        return self._applet

    @property
    def atr(self) -> bytes:
        """The card's answer-to-reset."""
        return self._applet.atr

    @property
    def counters(self) -> ApduCounters:
        """APDUs and bytes exchanged so far."""
        return self._counters

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU; the response data and the status word (e.g. 0x9000)."""
        response = self._applet.process(bytes(apdu))
        with self._lock:
            self._counters = self._counters.add(apdu, response)
        return response[:-2], int.from_bytes(response[-2:], "big")

    def reset(self) -> None:
        """A warm reset of the card (SCardReconnect with SCARD_RESET_CARD)."""
        self._applet.reset()
