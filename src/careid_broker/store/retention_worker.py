"""The retention purge's thread: a pass every `interval` in each broker process.

Every worker of every instance runs one; `Retention` makes sure no two purge at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from datetime import timedelta

from careid_broker.store.errors import StoreError
from careid_broker.store.retention import Retention

log = logging.getLogger(__name__)


class RetentionWorker:
    """A daemon thread running a purge pass every `interval` in this process."""

    def __init__(
        self,
        retention: Retention,
        *,
        interval: timedelta = timedelta(minutes=10),
        pause: timedelta = timedelta(milliseconds=50),
    ) -> None:
        self._retention = retention
        self._interval = interval.total_seconds()
        self._pause = pause.total_seconds()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def retention(self) -> Retention:
        """What each pass runs."""
        return self._retention

    @property
    def running(self) -> bool:
        """Whether the thread is alive in this process."""
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def ensure_running(self) -> None:
        """Start the thread if this process has none (again after a fork: threads do not
        survive one, and each gunicorn worker purges in its own)."""
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._thread = None
            self._pid = os.getpid()
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="careid-retention", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (it stops between batches)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout)

    def _run(self) -> None:
        # Workers and instances started together would all purge at once: each waits a
        # random part of the interval first, which spreads their passes out.
        if self._stop.wait(secrets.randbelow(max(int(self._interval * 1000), 1)) / 1000):
            return
        while not self._stop.is_set():
            try:
                self._retention.run_pass(between_batches=lambda: self._stop.wait(self._pause))
            except StoreError as exc:
                log.warning("retention purge not recorded: %s", exc.code.value)
            except Exception:  # noqa: BLE001 - the thread must outlive a bad pass
                log.exception("retention purge pass failed")
            self._stop.wait(self._interval)
