"""`careid-broker serve`: the broker under gunicorn, configured from the broker's own file.

Each worker builds its own app (no preloading): the store's connection pool and any
background threads must be created after the fork, never inherited across it.

Metrics: before the first fork the master makes a private directory (fresh, mode 0700)
where every worker keeps its metric values, so that a scrape answered by any worker
reports the sum over all of them; a worker that exits leaves its counts there, and the
directory goes when the master does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from careid_broker.app import create_app
from careid_broker.config import BrokerConfig, load_config
from careid_broker.logging_setup import gunicorn_logconfig
from careid_broker.metrics import use_multiprocess_directory, worker_exited


class BrokerLogger(Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logger without its access log: the broker writes its own access line
    (path only: query strings carry login transaction ids). gunicorn builds its line's
    fields for every request whenever a logging config is given, even one that drops
    the line, so it is switched off here rather than filtered out later."""

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, *_args: Any) -> None:
        return None


def gunicorn_options(
    config: BrokerConfig,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """gunicorn settings from `[server]`, with command-line overrides."""
    server = config.server
    thread_count = threads if threads is not None else server.threads
    return {
        "bind": [bind or server.bind],
        "workers": workers if workers is not None else server.workers,
        "threads": thread_count,
        "worker_class": "gthread" if thread_count > 1 else "sync",
        "timeout": server.timeout_seconds,
        "graceful_timeout": min(30, server.timeout_seconds),
        "proc_name": "careid-broker",
        # gunicorn's control socket is one fixed path per user: two brokers on a host
        # would fight over it, and nothing here uses it.
        "control_socket_disable": True,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "logger_class": BrokerLogger,
        "logconfig_dict": gunicorn_logconfig(config.logging),
        # Request lines and headers beyond these are refused before the app sees them.
        "limit_request_line": 8190,
        "limit_request_fields": 100,
    }


def metrics_hooks(directory: Path) -> dict[str, Any]:
    """gunicorn hooks that keep the workers' shared metrics directory in order."""

    def child_exit(server: Any, worker: Any) -> None:
        # Runs in the master for every worker that exits, killed or not: its live
        # gauges (connections it had open) go with it, its counters stay.
        worker_exited(worker.pid, directory)

    return {"child_exit": child_exit}


class BrokerServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """A gunicorn application that builds the broker in each worker."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def serve(
    config_path: Path,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> None:
    """Run gunicorn until it is stopped (SIGTERM or SIGINT)."""
    config = load_config(config_path)

    def factory() -> Flask:
        # Read again in the worker, so the environment the worker sees is what applies.
        return create_app(load_config(config_path))

    options = gunicorn_options(config, bind=bind, workers=workers, threads=threads)
    # mkdtemp: a new, empty directory only this user may read (0700), never one left
    # over from an earlier run, whose counts would be added to this one's.
    directory = Path(tempfile.mkdtemp(prefix="careid-metrics-"))
    master = os.getpid()
    try:
        use_multiprocess_directory(directory)
        BrokerServer(factory, options | metrics_hooks(directory)).run()
    finally:
        # A worker leaves through here too (gunicorn exits it by raising SystemExit
        # up the stack it was forked from): only the master removes the directory.
        if os.getpid() == master:
            shutil.rmtree(directory, ignore_errors=True)
