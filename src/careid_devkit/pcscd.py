"""Start Debian's `pcscd` for the virtual card, or reuse one that is already running.

Used by the test fixtures and the demo. Only a daemon this module started is stopped by
it: a workstation's own pcscd is left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/pcscd")
# vpcd's two readers listen on these TCP ports (Debian's /etc/reader.conf.d/vpcd: 0x8C7B).
VPCD_PORTS = (35963, 35964)
# How long to wait for another socket to let go of one (a client connection that got it
# as its ephemeral local port, then its 60 s TIME_WAIT if it closed first; .ci/setup
# reserves the ports where it can).
PORT_WAIT_SECONDS = 75.0
SOCKET_PATH = RUN_DIR / "pcscd.comm"
PID_PATH = RUN_DIR / "pcscd.pid"


class PcscdUnavailable(RuntimeError):
    """pcscd is not installed or did not come up."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid() -> int | None:
    """The pid of a live pcscd, from its pid file, or None."""
    try:
        pid = int(PID_PATH.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def socket_answers() -> bool:
    """Whether pcscd's client socket accepts a connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(SOCKET_PATH))
        except OSError:
            return False
    return True


def _port_taken(port: int) -> bool:
    """Whether binding `port` fails as vpcd's own bind would (SO_REUSEADDR, any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - a probe, closed at once
        except OSError:
            return True
    return False


def _wait_for_vpcd_ports(timeout: float) -> None:
    """Wait until vpcd's ports can be bound: a daemon started before that would come up
    with no virtual readers ("Address already in use" in its log) and stay so."""
    deadline = time.monotonic() + timeout
    taken = [port for port in VPCD_PORTS if _port_taken(port)]
    if taken:
        log.info("waiting for vpcd's ports %s to be released", taken)
    while taken:
        if time.monotonic() >= deadline:
            raise PcscdUnavailable(
                f"vpcd's TCP ports {taken} are still in use after {timeout:.0f} s:"
                " another program (or a pcscd not answering on its socket) holds them"
            )
        time.sleep(0.5)
        taken = [port for port in VPCD_PORTS if _port_taken(port)]


@dataclass
class Pcscd:
    """A handle on the running daemon; `started` says whether we own it."""

    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    @property
    def started(self) -> bool:
        """Whether this handle started (and so will stop) the daemon."""
        return self.process is not None

    def stop(self) -> None:
        """Stop the daemon if this handle started it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> Pcscd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def ensure_pcscd(*, log_path: Path | None = None, timeout: float = 15.0) -> Pcscd:
    """Reuse a running pcscd or start one in the foreground (`pcscd -f -a`).

    `-a` logs every APDU (to `log_path` when given), which tests read to count card I/O.
    Not `-x`: that exits after 60 s idle, under a test suite's feet.
    """
    if socket_answers():
        # `pcscd -f` writes no pid file, so the socket is the reliable sign of a daemon.
        log.info("reusing the running pcscd")
        return Pcscd(process=None, log_path=None)
    if running_pid() is not None:
        raise PcscdUnavailable("a pcscd is running but does not answer on its socket")
    binary = shutil.which("pcscd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if binary is None:
        raise PcscdUnavailable("pcscd is not installed (Debian package: pcscd)")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if PID_PATH.exists() and running_pid() is None:
        PID_PATH.unlink(missing_ok=True)  # stale pid file from a killed daemon
    _wait_for_vpcd_ports(PORT_WAIT_SECONDS)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argument list
            [binary, "-f", "-a"], stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PcscdUnavailable(f"pcscd exited at start with status {proc.returncode}")
        if socket_answers():
            log.info("started pcscd (pid %s)", proc.pid)
            return Pcscd(process=proc, log_path=log_path)
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise PcscdUnavailable("pcscd did not open its socket in time")
