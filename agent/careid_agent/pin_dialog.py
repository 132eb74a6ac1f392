"""The desktop PIN dialog (tkinter, which ships with Python on Windows and macOS).

The dialog names the web site asking and the card holder, so a person is never asked for
a PIN without knowing why. The PIN is read from the entry widget into a bytearray and the
widget is cleared at once; Tcl keeps its own copy of the text until the window is
destroyed a moment later, which is as short as Tk allows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from careid_agent.card import PinRequest
from careid_agent.errors import (
    PinEntryCancelledError,
    PinEntryTimeoutError,
    PinProviderUnavailableError,
)

log = logging.getLogger(__name__)

TITLE = "Care Identity smartcard"


class DialogUnavailableError(PinProviderUnavailableError):
    """Tk cannot open a window here (no display, no Tk): use another way to ask."""


def prompt_text(request: PinRequest) -> str:
    """What the dialog (and the terminal prompt) says above the PIN field."""
    asker = request.requester or "A program on this computer"
    lines = [
        f"{asker} asks to sign you in with your smartcard.",
        "",
        f"Card holder: {request.holder_name}",
        f"Reader: {request.reader}",
    ]
    if request.retries_left is not None:
        tries = "1 try" if request.retries_left == 1 else f"{request.retries_left} tries"
        lines += ["", f"{tries} left before the card is blocked."]
    lines += ["", "Only type your PIN if you have just started signing in."]
    return "\n".join(lines)


DialogHook = Callable[[Any, Any], None]
"""Called with (root window, PIN entry widget) once the dialog is up: tests drive it."""


def ask_pin_with_tk(
    request: PinRequest, *, timeout: float, on_ready: DialogHook | None = None
) -> bytearray:
    """Show the dialog and wait; the PIN, or PinEntryCancelled/PinEntryTimeout errors.

    Raises DialogUnavailableError when Tk cannot open a window.
    """
    try:
        import tkinter
        from tkinter import ttk
    except ImportError as exc:  # Python built without Tk (some Linux distributions)
        raise DialogUnavailableError(detail="tkinter is not installed") from exc
    try:
        root = tkinter.Tk()
    except tkinter.TclError as exc:
        raise DialogUnavailableError(detail=f"Tk cannot open a window: {exc}") from exc
    outcome: list[bytearray | str] = []
    try:
        root.title(TITLE)
        root.resizable(False, False)
        root.attributes("-topmost", True)
        frame = ttk.Frame(root, padding=16)
        frame.grid()
        ttk.Label(frame, text=prompt_text(request), justify="left", wraplength=380).grid(
            row=0, column=0, columnspan=2, sticky="w"
        )
        entry = ttk.Entry(frame, show="\u2022", width=24)
        entry.grid(row=1, column=0, columnspan=2, pady=(12, 12), sticky="we")

        def finish(result: bytearray | str) -> None:
            if not outcome:
                outcome.append(result)
            entry.delete(0, "end")
            root.quit()

        def submit() -> None:
            text = entry.get()
            if text:
                finish(bytearray(text.encode("utf-8")))

        ttk.Button(frame, text="Sign in", command=submit).grid(row=2, column=0, sticky="e")
        ttk.Button(frame, text="Cancel", command=lambda: finish("cancel")).grid(
            row=2, column=1, sticky="w", padx=(8, 0)
        )
        root.bind("<Return>", lambda _event: submit())
        root.bind("<Escape>", lambda _event: finish("cancel"))
        root.protocol("WM_DELETE_WINDOW", lambda: finish("cancel"))
        root.after(max(1, int(timeout * 1000)), lambda: finish("timeout"))
        root.lift()
        entry.focus_force()
        if on_ready is not None:
            root.after(0, lambda: on_ready(root, entry))
        root.mainloop()
    finally:
        root.destroy()
    result = outcome[0] if outcome else "cancel"
    if result == "timeout":
        raise PinEntryTimeoutError()
    if isinstance(result, bytearray):
        return result
    raise PinEntryCancelledError()
