"""PIN providers: env (development only), terminal (timeouts, late answers), the desktop
dialog's fallback (tkinter is installed here but there is no display), and the
main-thread runner that dialogs use."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from careid_agent.card import PinRequest
from careid_agent.config import PinProviderKind
from careid_agent.errors import (
    ConfigError,
    PinEntryCancelledError,
    PinEntryTimeoutError,
    PinProviderUnavailableError,
)
from careid_agent.pin import (
    PIN_ENV_VARIABLE,
    DialogPinProvider,
    EnvPinProvider,
    NoPinProvider,
    TerminalPinProvider,
    has_display,
    make_pin_entry,
)
from careid_agent.pin_dialog import DialogUnavailableError, ask_pin_with_tk, prompt_text
from careid_agent.pinpad import ReaderPinPad
from careid_agent.ui_thread import MainThreadRunner
from careid_protocol.errors import ErrorCode, message_for

REQUEST = PinRequest(
    reader="Virtual PCD 00 01",
    holder_name="Alex Morgan",
    uuid="555000000001",
    retries_left=None,
    requester="https://sso.careid.example.nhs.uk",
)


def test_env_provider_reads_the_variable_each_time_and_never_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {PIN_ENV_VARIABLE: "246810"}
    provider = EnvPinProvider(environ)
    with caplog.at_level(logging.DEBUG):
        pin = provider(REQUEST)
    assert isinstance(pin, bytearray) and pin == bytearray(b"246810")
    assert "DEVELOPMENT" in caplog.text and "246810" not in caplog.text
    environ[PIN_ENV_VARIABLE] = "135790"
    assert provider(REQUEST) == bytearray(b"135790")
    del environ[PIN_ENV_VARIABLE]
    with pytest.raises(PinProviderUnavailableError, match=PIN_ENV_VARIABLE):
        provider(REQUEST)


def test_env_provider_is_refused_without_dev(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="--dev"):
        make_pin_entry(PinProviderKind.ENV, timeout=60, dev=False)
    with caplog.at_level(logging.WARNING):
        entry = make_pin_entry(PinProviderKind.ENV, timeout=60, dev=True, environ={})
    assert isinstance(entry.provider, EnvPinProvider) and entry.pin_pad is None
    assert "DEVELOPMENT MODE" in caplog.text  # said loudly, at start


def test_provider_kinds() -> None:
    auto = make_pin_entry(PinProviderKind.AUTO, timeout=60, dev=False)
    assert isinstance(auto.provider, DialogPinProvider) and isinstance(auto.pin_pad, ReaderPinPad)
    pinpad = make_pin_entry(PinProviderKind.PINPAD, timeout=60, dev=False)
    assert isinstance(pinpad.provider, NoPinProvider) and isinstance(pinpad.pin_pad, ReaderPinPad)
    with pytest.raises(PinProviderUnavailableError, match="no PIN pad"):
        pinpad.provider(REQUEST)
    dialog = make_pin_entry(PinProviderKind.DIALOG, timeout=60, dev=False)
    assert isinstance(dialog.provider, DialogPinProvider) and dialog.pin_pad is None
    terminal = make_pin_entry(PinProviderKind.TERMINAL, timeout=60, dev=False)
    assert isinstance(terminal.provider, TerminalPinProvider) and terminal.pin_pad is None


class Keyboard:
    """Stands in for getpass: each read waits until the test 'types' an answer."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.answers: list[str | BaseException] = []
        self.ready = threading.Condition()

    def read(self, prompt: str) -> str:
        with self.ready:
            self.prompts.append(prompt)
            self.ready.wait_for(lambda: bool(self.answers), timeout=10)
            answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def type(self, answer: str | BaseException) -> None:
        with self.ready:
            self.answers.append(answer)
            self.ready.notify_all()


def _terminal(keyboard: Keyboard, timeout: float = 5.0) -> tuple[TerminalPinProvider, io.StringIO]:
    out = io.StringIO()
    return (
        TerminalPinProvider(
            timeout=timeout, read=keyboard.read, interactive=lambda: True, output=out
        ),
        out,
    )


def test_terminal_reads_the_pin_and_says_who_asks() -> None:
    keyboard = Keyboard()
    provider, out = _terminal(keyboard)
    keyboard.type("246810")
    assert provider(REQUEST) == bytearray(b"246810")
    assert "https://sso.careid.example.nhs.uk asks to sign you in" in out.getvalue()
    assert "Alex Morgan" in out.getvalue() and "246810" not in out.getvalue()
    keyboard.type("")
    with pytest.raises(PinEntryCancelledError):
        provider(REQUEST)
    keyboard.type(EOFError())
    with pytest.raises(PinEntryCancelledError):
        provider(REQUEST)


def test_terminal_without_a_terminal_is_unavailable() -> None:
    provider = TerminalPinProvider(read=lambda prompt: "246810", interactive=lambda: False)
    with pytest.raises(PinProviderUnavailableError) as caught:
        provider(REQUEST)
    # The clinician is told the agent cannot ask, and whom to call; IT support gets why.
    assert caught.value.message == message_for(ErrorCode.PIN_PROVIDER_UNAVAILABLE)
    assert "terminal" not in caught.value.message
    assert "standard input is not a terminal" in (caught.value.detail or "")


def test_terminal_times_out_and_a_late_pin_is_never_used_for_the_next_sign_in() -> None:
    keyboard = Keyboard()
    provider, out = _terminal(keyboard, timeout=0.2)
    with pytest.raises(PinEntryTimeoutError):
        provider(REQUEST)
    keyboard.type("111111")  # typed after the prompt gave up
    assert _eventually(lambda: not keyboard.answers)
    keyboard.type("246810")
    assert provider(REQUEST) == bytearray(b"246810")  # a fresh prompt, a fresh answer
    assert len(keyboard.prompts) == 2


def test_terminal_reuses_a_prompt_still_waiting() -> None:
    keyboard = Keyboard()
    provider, out = _terminal(keyboard, timeout=0.2)
    with pytest.raises(PinEntryTimeoutError):
        provider(REQUEST)
    threading.Timer(0.05, keyboard.type, args=("246810",)).start()
    assert provider(REQUEST) == bytearray(b"246810")
    assert len(keyboard.prompts) == 1  # the same getpass read, not a second one
    assert "prompt above" in out.getvalue()


def _eventually(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        event.wait(0.01)
    return condition()


def test_has_display() -> None:
    assert has_display(platform="win32", environ={})
    assert has_display(platform="darwin", environ={})
    assert not has_display(platform="linux", environ={})
    assert has_display(platform="linux", environ={"DISPLAY": ":0"})
    assert has_display(platform="linux", environ={"WAYLAND_DISPLAY": "wayland-0"})


def test_dialog_falls_back_to_the_terminal_without_a_display() -> None:
    asked: list[PinRequest] = []

    def terminal(request: PinRequest) -> bytearray:
        asked.append(request)
        return bytearray(b"246810")

    def no_dialog(request: PinRequest, timeout: float) -> bytearray:
        raise AssertionError("no dialog without a display")

    provider = DialogPinProvider(fallback=terminal, display=lambda: False, dialog=no_dialog)
    assert provider(REQUEST) == bytearray(b"246810") and asked == [REQUEST]
    with pytest.raises(PinProviderUnavailableError):
        DialogPinProvider(fallback=None, display=lambda: False)(REQUEST)


def test_no_dialog_and_no_terminal_is_plain_for_the_clinician() -> None:
    def no_tk(request: PinRequest, timeout: float) -> bytearray:
        raise DialogUnavailableError(detail="tkinter is not installed")

    terminal = TerminalPinProvider(interactive=lambda: False)
    provider = DialogPinProvider(fallback=terminal, display=lambda: True, dialog=no_tk)
    with pytest.raises(PinProviderUnavailableError) as caught:
        provider(REQUEST)
    error = caught.value
    assert error.message == message_for(ErrorCode.PIN_PROVIDER_UNAVAILABLE)
    assert "IT support" in error.message
    for jargon in ("terminal", "tkinter", "Tk ", "display"):
        assert jargon not in error.message
    assert "tkinter is not installed" in (error.detail or "")
    assert "standard input is not a terminal" in (error.detail or "")


def test_real_tkinter_without_a_display_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tkinter", reason="needs tkinter (Debian package python3-tk)")
    # A display that does not exist: the environment claims one, Tk cannot open it.
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DialogUnavailableError):
        ask_pin_with_tk(REQUEST, timeout=1)
    provider = DialogPinProvider(fallback=lambda request: bytearray(b"246810"))
    assert provider(REQUEST) == bytearray(b"246810")


def test_dialog_outcomes_are_passed_on_not_fallen_back_from() -> None:
    def timed_out(request: PinRequest, timeout: float) -> bytearray:
        raise PinEntryTimeoutError()

    def fallback(request: PinRequest) -> bytearray:
        raise AssertionError("a timed-out dialog must not ask again on the terminal")

    provider = DialogPinProvider(fallback=fallback, display=lambda: True, dialog=timed_out)
    with pytest.raises(PinEntryTimeoutError):
        provider(REQUEST)


def test_prompt_names_who_asks_and_the_tries_left() -> None:
    text = prompt_text(REQUEST)
    assert text.startswith("https://sso.careid.example.nhs.uk asks to sign you in")
    assert "Card holder: Alex Morgan" in text and "tries left" not in text
    warned = prompt_text(PinRequest(reader="R", holder_name="A", uuid=None, retries_left=1))
    assert "1 try left before the card is blocked" in warned
    assert warned.startswith("A program on this computer asks")


def test_the_runner_runs_ui_jobs_on_its_own_thread() -> None:
    runner = MainThreadRunner()
    assert runner.call(threading.get_ident) == threading.get_ident()  # not running: inline
    stop = threading.Event()
    ran_on: list[int] = []
    results: list[object] = []

    def ui_job() -> str:
        ran_on.append(threading.get_ident())
        return "pin"

    def request_thread() -> None:
        assert _eventually(lambda: runner.running)
        results.append(runner.call(ui_job))
        try:
            runner.call(lambda: 1 / 0)
        except ZeroDivisionError as exc:
            results.append(exc)
        stop.set()

    worker = threading.Thread(target=request_thread)
    worker.start()
    runner.run_until(stop)  # this thread plays the main thread
    worker.join(timeout=5)
    assert ran_on == [threading.get_ident()]
    assert results[0] == "pin" and isinstance(results[1], ZeroDivisionError)
    assert not runner.running


@pytest.fixture(scope="module")
def x_display() -> Iterator[str]:
    """A throwaway X server (Xvfb) for the real dialog; skipped where there is none."""
    pytest.importorskip("tkinter", reason="needs tkinter (Debian package python3-tk)")
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("needs Xvfb (Debian package xvfb) to show the real PIN dialog")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "800x600x24"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as numbers:
            display = numbers.readline().strip()
        if not display:
            pytest.fail("Xvfb did not report its display number")
        yield f":{display}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_real_dialog_takes_a_pin_cancel_and_timeout(
    x_display: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", x_display)
    shown: list[str] = []

    def typing(text: str, key: str) -> Callable[[Any, Any], None]:
        def act(root: Any, entry: Any) -> None:
            shown.append(root.title())
            entry.wait_visibility()  # X delivers no key events to an unmapped window
            entry.focus_force()
            entry.insert(0, text)
            entry.event_generate(key)

        return act

    pin = ask_pin_with_tk(REQUEST, timeout=10, on_ready=typing("246810", "<Return>"))
    assert pin == bytearray(b"246810") and shown == ["Care Identity smartcard"]
    with pytest.raises(PinEntryCancelledError):
        ask_pin_with_tk(REQUEST, timeout=10, on_ready=typing("2468", "<Escape>"))
    started = time.monotonic()
    with pytest.raises(PinEntryTimeoutError):  # Return on an empty field does nothing
        ask_pin_with_tk(REQUEST, timeout=0.5, on_ready=typing("", "<Return>"))
    assert time.monotonic() - started < 5
