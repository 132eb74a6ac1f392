"""Child processes of the demo: started with a log file, waited for, stopped by their pid.

Only processes started here are ever signalled, and only through their own `Popen`
handle (never by name). Children run in their own session so that Ctrl-C reaches the
demo alone, which then stops them in order — except a child that must read the
terminal (the agent's PIN prompt), which stays in the demo's foreground group.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from careid_devkit.codes import DevkitCode, message_for

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
_POLL = 0.05
#: Variables that would quietly change a child's settings behind the generated files.
_SCRUBBED_PREFIXES = ("CAREID_",)


class ServiceFailedError(Exception):
    """A part of the demo exited or never answered; names it and its log."""

    code = DevkitCode.DEVKIT_DEMO_SERVICE_FAILED

    def __init__(self, name: str, detail: str, log_path: Path | None = None) -> None:
        self.name = name
        self.detail = detail
        self.log_path = log_path
        where = f" Its log: {log_path}" if log_path else ""
        tail = f"\n  last lines: {log_tail(log_path)}" if log_path else ""
        super().__init__(f"the {name} {detail}.{where}{tail}\n{message_for(self.code)}")


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """The command run so that it gets SIGTERM if the demo dies without stopping it.

    A demo (or a test run) killed with SIGKILL cannot stop its children, and children in
    their own session would outlive it holding the demo's ports. `setpriv --pdeathsig`
    (util-linux) sets PR_SET_PDEATHSIG and then execs the command, keeping its pid. The
    signal follows the thread that started the child: start children from a thread that
    lives as long as they should (the demo's main thread does).
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


def log_tail(path: Path | None, lines: int = 8) -> str:
    """The last lines of a log file, on one line, for an error message."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(empty log)"


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without CAREID_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def http_answers(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 1.0
) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - our URLs
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class ServiceProcess:
    """One child process of the demo."""

    name: str
    command: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    interactive: bool = False
    """Keep the terminal (stdin, foreground group): the agent's PIN prompt needs it."""
    cwd: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exit_status(self) -> int | None:
        """The exit status once it has exited, else None."""
        return self._process.poll() if self._process else None

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called (an exit is then expected)."""
        return self._stopping

    def start(self) -> None:
        """Start the process, its output appended to its log file."""
        if self.running:
            raise RuntimeError(f"the {self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        out: IO[bytes]
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(  # noqa: S603 - our own commands, no shell
                _with_parent_death_signal(list(self.command)),
                stdin=None if self.interactive else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(self.env),
                cwd=self.cwd,
                start_new_session=not self.interactive,
            )
        log.info("started the %s (pid %s): %s", self.name, self._process.pid, self.log_path)

    def check_alive(self) -> None:
        """ServiceFailedError when it has exited."""
        status = self.exit_status
        if self._process is not None and status is not None:
            raise ServiceFailedError(self.name, f"exited with status {status}", self.log_path)

    def wait_ready(
        self, ready: Callable[[], bool], *, timeout: float, what: str = "answer"
    ) -> None:
        """Wait until `ready()` is true; ServiceFailedError if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ServiceFailedError(
                    self.name, f"did not {what} within {timeout:g} s", self.log_path
                )
            time.sleep(_POLL * 2)

    def wait(self, timeout: float) -> int:
        """Wait for it to exit on its own; its status (ServiceFailedError on timeout)."""
        if self._process is None:
            raise RuntimeError(f"the {self.name} was never started")
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServiceFailedError(
                self.name, f"did not finish within {timeout:g} s", self.log_path
            ) from exc

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after `timeout`; by its own pid only."""
        self._stopping = True
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the %s did not stop within %g s; killing it", self.name, timeout)
            process.kill()
            process.wait(5)
        log.info("stopped the %s (status %s)", self.name, process.returncode)
