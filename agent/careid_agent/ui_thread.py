"""Run desktop UI work on the main thread.

macOS's Tk (Cocoa) only works on the process's main thread, and Tk on every platform is
happiest when one thread owns it. The HTTP server therefore runs in background threads
and `careid-agent serve` lends its main thread to this runner; a request thread that
needs a PIN dialog hands the work over and waits for its answer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from careid_agent.errors import AgentStoppingError

T = TypeVar("T")

_POLL = 0.2


class MainThreadRunner:
    """A queue of UI jobs that the main thread works through in `run_until`."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], Future[object]]] = queue.Queue()
        self._running = threading.Event()
        self._owner: int | None = None

    @property
    def running(self) -> bool:
        """Whether a thread is working through the queue now."""
        return self._running.is_set()

    def call(self, job: Callable[[], T]) -> T:
        """Run `job` on the runner's thread and return its result (or raise its error).

        Called on the runner's own thread, or when no thread runs it (tests, tools), the
        job runs right here.
        """
        if not self._running.is_set() or threading.get_ident() == self._owner:
            return job()
        future: Future[object] = Future()
        self._jobs.put((job, future))
        while True:
            try:
                return future.result(timeout=_POLL)  # type: ignore[return-value]
            except TimeoutError:
                if not self._running.is_set() and future.cancel():
                    raise AgentStoppingError() from None

    def run_until(self, stop: threading.Event) -> None:
        """Work through jobs on this thread until `stop` is set."""
        self._owner = threading.get_ident()
        self._running.set()
        try:
            while not stop.is_set():
                try:
                    job, future = self._jobs.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(job())
                except Exception as exc:  # handed to the waiting thread to raise
                    future.set_exception(exc)
                except BaseException:
                    # Ctrl-C during a dialog stops the agent; the waiting request fails.
                    future.set_exception(AgentStoppingError())
                    raise
        finally:
            self._running.clear()
            self._owner = None
            self._fail_pending()

    def _fail_pending(self) -> None:
        # Nobody will run these now; their callers must not wait forever.
        while True:
            try:
                _, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(AgentStoppingError())
