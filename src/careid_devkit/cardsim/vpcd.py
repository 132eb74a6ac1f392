"""Plug the virtual card into a real pcscd through vsmartcard's `vpcd` reader driver.

vpcd listens on TCP (35963 is reader "Virtual PCD 00 00", 35964 "Virtual PCD 00 01") and
the card connects to it as a client. Every message is a 2-byte big-endian length and a
payload; a 1-byte payload is a control code (00 power off, 01 power on, 02 reset, 04 get
ATR), anything longer is a command APDU. Closing the socket is pulling the card out.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from careid_devkit.cardsim.apdu import ApduCounters
from careid_devkit.cardsim.applet import PivApplet

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963

_POWER_OFF, _POWER_ON, _RESET, _GET_ATR = 0x00, 0x01, 0x02, 0x04
_FIRST_BACKOFF = 0.05


class VpcdCardClient:
    """The virtual card in a vpcd reader: `start()` inserts it, `stop()` removes it."""

    def __init__(
        self,
        applet: PivApplet,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        on_command: Callable[[bytes], bool] | None = None,
        max_backoff: float = 1.0,
    ) -> None:
        self._applet = applet
        self._address = (host, port)
        self._on_command = on_command
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._inserted = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._counters = ApduCounters()

    @property
    def applet(self) -> PivApplet:
        """The card being served."""
        return self._applet

    @property
    def counters(self) -> ApduCounters:
        """APDUs answered and their bytes (control messages and length headers excluded)."""
        with self._lock:
            return self._counters

    @property
    def inserted(self) -> bool:
        """Whether vpcd has the card in its reader (it has asked for the ATR)."""
        return self._inserted.is_set()

    def start(self) -> None:
        """Insert the card: serve it from a daemon thread until `stop()` (or a yank)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError("the card is already in the reader")
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self.run, name=f"vpcd-card-{self._address[1]}", daemon=True
            )
            self._thread.start()

    def wait_inserted(self, timeout: float | None = None) -> bool:
        """Wait until vpcd has asked for the ATR; False on timeout."""
        return self._inserted.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Remove the card: close the socket (pcscd notices within ~0.5 s). Thread-safe."""
        self._stopping.set()
        with self._lock:
            sock, thread = self._sock, self._thread
        if sock is not None:
            _shutdown(sock)  # unblocks the serving thread's recv()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run(self) -> None:
        """Serve the card in this thread until `stop()`, reconnecting when vpcd goes away.

        A yank (`on_command` returned False) ends the loop too: the card stays out until
        `start()` is called again.
        """
        backoff = _FIRST_BACKOFF
        while not self._stopping.is_set():
            sock = self._connect()
            if sock is None:
                # vpcd (pcscd) is not listening yet: try again, a little less eagerly.
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = _FIRST_BACKOFF
            try:
                yanked = self._serve(sock)
            except OSError as exc:
                log.info("vpcd connection lost: %s", exc)
                yanked = False
            finally:
                self._detach(sock)
            if yanked:
                break

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self._address, timeout=1.0)
        except OSError as exc:
            log.debug("vpcd at %s:%s not reachable: %s", *self._address, exc)
            return None
        sock.settimeout(None)
        # The card answers at once; never hold a reply back waiting to coalesce it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return None
            self._sock = sock
        log.info("virtual card connected to vpcd at %s:%s", *self._address)
        return sock

    def _detach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = None
        self._inserted.clear()
        sock.close()
        self._applet.reset()  # out of the reader: power is gone
        log.info("virtual card disconnected from vpcd at %s:%s", *self._address)

    def _serve(self, sock: socket.socket) -> bool:
        """Answer vpcd until it hangs up (False) or the card is yanked (True)."""
        while True:
            message = _receive(sock)
            if message is None:
                return False
            if len(message) == 1:
                self._control(sock, message[0])
                continue
            if len(message) < 4:
                log.warning("ignoring a %d-byte message from vpcd", len(message))
                continue
            if self._on_command is not None and not self._on_command(message):
                log.info("card yanked while a command was in flight")
                return True
            response = self._applet.process(message)
            with self._lock:  # counted before the reply leaves, so a host never sees it lag
                self._counters = self._counters.add(message, response)
            _send(sock, response)

    def _control(self, sock: socket.socket, code: int) -> None:
        if code == _GET_ATR:
            _send(sock, self._applet.atr)
            self._inserted.set()
        elif code in (_POWER_OFF, _POWER_ON, _RESET):
            self._applet.reset()  # no reply: vpcd does not wait for one
        else:
            log.warning("ignoring unknown vpcd control code %02X", code)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side: nothing left to unblock


def _quickack(sock: socket.socket) -> None:
    # Debian's vpcd writes the length and the body separately; with delayed ACK each
    # message then stalls ~40 ms. Linux clears TCP_QUICKACK after use, so set it each time.
    if hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _receive_exactly(sock: socket.socket, count: int) -> bytes | None:
    buffer = bytearray()
    while len(buffer) < count:
        _quickack(sock)
        chunk = sock.recv(count - len(buffer))
        if not chunk:
            return None
        buffer += chunk
    return bytes(buffer)


def _receive(sock: socket.socket) -> bytes | None:
    """One whole message, or None when vpcd closed the connection."""
    header = _receive_exactly(sock, 2)
    if header is None:
        return None
    return _receive_exactly(sock, int.from_bytes(header, "big"))


def _send(sock: socket.socket, payload: bytes) -> None:
    # One write per message (length and body together), and never an empty one: vpcd
    # takes a zero-length reply as the card being removed.
    if not payload:
        raise ValueError("refusing to send an empty message to vpcd")
    sock.sendall(len(payload).to_bytes(2, "big") + payload)
