"""PIN providers: how the agent asks the person for their PIN.

The web page never sees the PIN: the agent asks for it itself, on this computer (a
desktop dialog, the terminal) or, better, on the reader's own keypad (`pinpad`), where it
never passes through the computer at all. Every prompt times out. PINs are handed to the
card layer as bytearrays, which it wipes once VERIFY is sent; none is ever logged.

`env` reads `CAREID_AGENT_PIN` for unattended development runs. It is refused without
`--dev` and shouts when used: a PIN in the environment can be read by any program the
user runs.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TextIO

from careid_agent.card import PinPad, PinProvider, PinRequest
from careid_agent.config import PinProviderKind
from careid_agent.errors import (
    ConfigError,
    PinEntryCancelledError,
    PinEntryTimeoutError,
    PinProviderUnavailableError,
)
from careid_agent.pin_dialog import DialogUnavailableError, ask_pin_with_tk, prompt_text
from careid_agent.pinpad import ReaderPinPad
from careid_agent.ui_thread import MainThreadRunner

log = logging.getLogger(__name__)

PIN_ENV_VARIABLE = "CAREID_AGENT_PIN"

DialogFunction = Callable[[PinRequest, float], bytearray]


def has_display(*, platform: str = sys.platform, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a desktop session is likely: always on Windows and macOS; X11 or Wayland
    elsewhere (Tk itself still has the last word, and failing it we fall back)."""
    if platform in ("win32", "darwin"):
        return True
    env = os.environ if environ is None else environ
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _stdin_is_terminal() -> bool:
    # pythonw (Windows, no console) has no stdin at all.
    return sys.stdin is not None and sys.stdin.isatty()


class EnvPinProvider:
    """DEVELOPMENT ONLY: the PIN from `CAREID_AGENT_PIN`, read at each sign-in."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def __call__(self, request: PinRequest, /) -> bytearray:
        """The variable's value; PinProviderUnavailable when it is not set."""
        value = self._environ.get(PIN_ENV_VARIABLE)
        if not value:
            raise PinProviderUnavailableError(
                f"{PIN_ENV_VARIABLE} is not set, and this development agent reads the PIN"
                " from it. Set it, or start the agent with another --pin-provider."
            )
        log.warning(
            "DEVELOPMENT: using the PIN from %s for a sign-in requested by %s",
            PIN_ENV_VARIABLE,
            request.requester or "a local program",
        )
        return bytearray(value.encode("utf-8"))


class TerminalPinProvider:
    """Asks on the terminal the agent runs in (`getpass`: no echo), with a timeout.

    `getpass` cannot be interrupted portably, so the read runs in a helper thread. A PIN
    typed after its prompt timed out is thrown away, never used for a later sign-in the
    person did not see; a prompt still waiting is reused by the next request.
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        read: Callable[[str], str] = getpass.getpass,
        interactive: Callable[[], bool] = _stdin_is_terminal,
        output: TextIO | None = None,
    ) -> None:
        self._timeout = timeout
        self._read = read
        self._interactive = interactive
        self._output = output
        self._lock = threading.Lock()
        self._pending: Future[str] | None = None

    def __call__(self, request: PinRequest, /) -> bytearray:
        """The PIN typed at the terminal."""
        if not self._interactive():
            raise PinProviderUnavailableError(
                detail="no terminal to ask for the PIN on (the agent's standard input is not"
                " a terminal)"
            )
        output = self._output or sys.stderr
        with self._lock:
            pending = self._pending
            if pending is not None and pending.done():
                pending = self._pending = None  # a late answer to an abandoned prompt
            print(f"\n{prompt_text(request)}", file=output, flush=True)
            if pending is None:
                pending = self._pending = self._start_read()
            else:
                print("(Type your PIN at the prompt above.)", file=output, flush=True)
        try:
            text = pending.result(timeout=self._timeout)
        except TimeoutError:
            print("\nNo PIN was entered in time.", file=output, flush=True)
            raise PinEntryTimeoutError() from None
        except (EOFError, KeyboardInterrupt, OSError) as exc:
            raise PinEntryCancelledError() from exc
        finally:
            with self._lock:
                if self._pending is pending and pending.done():
                    self._pending = None
        if not text:
            raise PinEntryCancelledError()
        return bytearray(text.encode("utf-8"))

    def _start_read(self) -> Future[str]:
        future: Future[str] = Future()

        def read() -> None:
            try:
                future.set_result(self._read("Smartcard PIN: "))
            except Exception as exc:  # EOF, a closed terminal: handed to the waiter
                future.set_exception(exc)

        threading.Thread(target=read, name="careid-pin-terminal", daemon=True).start()
        return future


class DialogPinProvider:
    """The desktop dialog; the fallback (the terminal) when there is no display."""

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        fallback: PinProvider | None = None,
        display: Callable[[], bool] = has_display,
        dialog: DialogFunction | None = None,
        runner: MainThreadRunner | None = None,
    ) -> None:
        self._timeout = timeout
        self._fallback = fallback
        self._display = display
        self._dialog = dialog or self._tk_dialog
        self._runner = runner or MainThreadRunner()
        self._lock = threading.Lock()

    @staticmethod
    def _tk_dialog(request: PinRequest, timeout: float) -> bytearray:
        return ask_pin_with_tk(request, timeout=timeout)

    def __call__(self, request: PinRequest, /) -> str | bytearray:
        """The PIN from the dialog, or from the fallback when no dialog can be shown."""
        if self._display():
            try:
                with self._lock:  # one dialog at a time
                    return self._runner.call(lambda: self._dialog(request, self._timeout))
            except DialogUnavailableError as exc:
                reason = exc.detail or exc.message
        else:
            reason = "no desktop display to show it on"
        log.info("no PIN dialog possible (%s); trying the terminal", reason)
        if self._fallback is None:
            raise PinProviderUnavailableError(detail=f"no PIN dialog: {reason}")
        try:
            return self._fallback(request)
        except PinProviderUnavailableError as exc:
            # The person is told the agent cannot ask; IT support needs both reasons.
            raise PinProviderUnavailableError(
                detail=f"no PIN dialog: {reason}; {exc.detail or exc.message}"
            ) from exc


class NoPinProvider:
    """Refuses: for `pinpad`, when the reader turns out to have no keypad."""

    def __init__(self, message: str) -> None:
        self._message = message

    def __call__(self, request: PinRequest, /) -> bytearray:
        """Always PinProviderUnavailable."""
        raise PinProviderUnavailableError(self._message)


@dataclass(frozen=True, kw_only=True)
class PinEntry:
    """What the card layer is given: a PIN provider, and a PIN pad to prefer if any."""

    provider: PinProvider
    pin_pad: PinPad | None


def make_pin_entry(
    kind: PinProviderKind,
    *,
    timeout: float,
    dev: bool,
    environ: Mapping[str, str] | None = None,
    runner: MainThreadRunner | None = None,
) -> PinEntry:
    """The PIN entry for a configured provider kind."""
    terminal = TerminalPinProvider(timeout=timeout)
    dialog = DialogPinProvider(timeout=timeout, fallback=terminal, runner=runner)
    if kind is PinProviderKind.ENV:
        if not dev:
            raise ConfigError(
                "pin_provider 'env' reads the PIN from the environment; it needs --dev."
            )
        log.warning(
            "DEVELOPMENT MODE: the PIN comes from %s. Never use this on a clinical workstation.",
            PIN_ENV_VARIABLE,
        )
        return PinEntry(provider=EnvPinProvider(environ), pin_pad=None)
    if kind is PinProviderKind.TERMINAL:
        return PinEntry(provider=terminal, pin_pad=None)
    if kind is PinProviderKind.DIALOG:
        return PinEntry(provider=dialog, pin_pad=None)
    pad = ReaderPinPad(timeout=timeout, notify=_log_pin_pad_prompt)
    if kind is PinProviderKind.PINPAD:
        no_pad = NoPinProvider(
            "This smartcard reader has no PIN pad, and this workstation only accepts PINs"
            " typed on one. Use a PIN-pad reader, or ask IT support."
        )
        return PinEntry(provider=no_pad, pin_pad=pad)
    return PinEntry(provider=dialog, pin_pad=pad)


def _log_pin_pad_prompt(request: PinRequest) -> None:
    log.info("asking for the PIN on the keypad of %r for %s", request.reader, request.requester)
