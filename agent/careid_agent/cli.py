"""`careid-agent`: look at readers and the card, and run the localhost service (`serve`).

Each subcommand lives in its own `_register_*` function that adds a subparser and sets
`func=handler`, with `handler(args, env) -> int`.
Errors print their stable code and plain message on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import logging.handlers
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from careid_agent import __version__, transport
from careid_agent.apdu import TRACE
from careid_agent.card import CardService, CardStatus, PinPolicy
from careid_agent.config import (
    Overrides,
    PinProviderKind,
    default_config_paths,
    find_config,
    load_config,
)
from careid_agent.errors import (
    AgentError,
    CardError,
    ConfigError,
    NoReaderError,
    PinBlockedError,
)
from careid_agent.transport import CardConnection, ReaderInfo

_VERBOSITY = [logging.WARNING, logging.INFO, logging.DEBUG, TRACE]


def _pcsc_list_readers() -> list[ReaderInfo]:
    return transport.list_readers()


def _pcsc_connect(reader: str | None) -> CardConnection:
    return transport.connect(reader)


@dataclass(frozen=True, kw_only=True)
class CliEnv:
    """What the commands touch outside the process; tests pass an in-process card."""

    list_readers: Callable[[], list[ReaderInfo]] = _pcsc_list_readers
    connect: Callable[[str | None], CardConnection] = _pcsc_connect
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)


Handler = Callable[[argparse.Namespace, CliEnv], int]


def _report_error(error: CardError | AgentError, env: CliEnv, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": error.code.value, "message": error.message}), file=env.stderr)
    else:
        print(f"careid-agent: {error.code.value}: {error.message}", file=env.stderr)
    return 1


# -- readers ------------------------------------------------------------------------------


def _readers(args: argparse.Namespace, env: CliEnv) -> int:
    readers = env.list_readers()
    if not readers:
        raise NoReaderError()
    if args.json:
        rows = [
            {"name": r.name, "cardPresent": r.card_present, "atr": r.atr.hex().upper() or None}
            for r in readers
        ]
        print(json.dumps({"readers": rows}, indent=2), file=env.stdout)
        return 0
    for r in readers:
        card = f"card present, ATR {r.atr.hex(' ').upper()}" if r.card_present else "no card"
        print(f"{r.name}: {card}", file=env.stdout)
    return 0


def _register_readers(sub: Any) -> None:
    parser = sub.add_parser("readers", help="list smartcard readers and whether a card is in")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_readers)


# -- status -------------------------------------------------------------------------------


def _print_status(status: CardStatus, env: CliEnv) -> None:
    if status.pin_blocked:
        pin = "blocked"
    elif status.pin_tries_left is None:
        pin = "verified"
    else:
        pin = str(status.pin_tries_left)
    validity = "" if status.certificate_valid else " (not valid now)"
    rows = [
        ("Reader", status.reader),
        ("Card holder", status.holder_name),
        ("Care Identity UUID", status.uuid or "(none found in the certificate)"),
        ("Issuer", status.issuer),
        ("Certificate expires", f"{status.not_after:%Y-%m-%d %H:%M:%S} UTC{validity}"),
        ("Key algorithm", status.key_description),
        ("PIN tries left", pin),
    ]
    if status.card_id:
        rows.append(("Card ID", status.card_id))
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':':<{width}} {value}", file=env.stdout)


def _status(args: argparse.Namespace, env: CliEnv) -> int:
    service = CardService(functools.partial(env.connect, args.reader))
    status = service.status()
    if args.json:
        print(json.dumps(status.to_json(), indent=2), file=env.stdout)
    else:
        _print_status(status, env)
    if status.pin_blocked:
        # The card is readable but unusable for sign-in: say so and fail, for scripts.
        return _report_error(PinBlockedError(), env, as_json=args.json)
    return 0


def _register_status(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="show the card holder, certificate and PIN tries left (no PIN needed)"
    )
    parser.add_argument("--reader", metavar="NAME", help="reader name (or a unique part of it)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_status)


# -- serve --------------------------------------------------------------------------------

_DEV_BANNER = """\
*************************************************************************
*  careid-agent is running in DEVELOPMENT MODE (--dev).                 *
*  http://localhost origins are accepted and the PIN may come from the  *
*  environment. Never run a clinical workstation like this.             *
*************************************************************************"""


def _serve(args: argparse.Namespace, env: CliEnv) -> int:
    from careid_agent.serve import Agent  # the HTTP stack only loads for `serve`

    path = args.config or find_config(default_config_paths())
    overrides = Overrides(
        port=args.port,
        allowed_origins=tuple(args.allow_origin or ()),
        pin_provider=args.pin_provider,
        pin_policy=args.pin_policy,
        reader=args.reader,
        log_level=args.log_level,
        log_file=args.log_file,
        dev=args.dev,
    )
    config = load_config(path, overrides=overrides)
    agent_log = logging.getLogger("careid_agent")
    previous_level = agent_log.level
    if args.verbose == 0:
        agent_log.setLevel(config.log_level.upper())
    file_handler = _log_file_handler(config.log_file) if config.log_file else None
    if file_handler is not None:
        agent_log.addHandler(file_handler)
    try:
        if config.dev:
            print(_DEV_BANNER, file=env.stderr)
            agent_log.warning("development mode: not for clinical use")
        agent_log.info("settings from %s", path or "the command line")
        try:
            agent = Agent(config)
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on 127.0.0.1:{config.port} ({exc.strerror}). Is another"
                " careid-agent already running?"
            ) from exc
        _run_until_signalled(agent, env)
    finally:
        agent_log.setLevel(previous_level)  # main() may be called again in this process
        if file_handler is not None:
            agent_log.removeHandler(file_handler)
            file_handler.close()
    return 0


def _log_file_handler(path: Path) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(f"{path}: the log file cannot be written ({exc.strerror}).") from exc
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _run_until_signalled(agent: Any, env: CliEnv) -> None:
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
            if hasattr(signal, name):
                number = getattr(signal, name)
                previous[number] = signal.signal(number, lambda *_: stop.set())
    agent.start()
    print(f"careid-agent: listening on {agent.url}", file=env.stderr, flush=True)
    try:
        # The main thread runs PIN dialogs (macOS only allows UI there) until told to stop.
        agent.runner.run_until(stop)
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)


def _register_serve(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the localhost API that sign-in pages call (http://127.0.0.1:47600)",
        description="Run the agent's localhost API. Settings come from --config, else the"
        " first of " + ", ".join(str(p) for p in default_config_paths()) + "; flags"
        " override them.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default 47600)")
    parser.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="a sign-in page origin (https://host[:port]); repeat for several; replaces"
        " the file's list",
    )
    parser.add_argument(
        "--pin-provider", choices=[k.value for k in PinProviderKind], help="how to ask for the PIN"
    )
    parser.add_argument(
        "--pin-policy", choices=[p.value for p in PinPolicy], help="when to ask for the PIN"
    )
    parser.add_argument(
        "--reader", metavar="NAME", help="use only this reader (or part of its name)"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-file", metavar="FILE", help="also log to this file (rotated)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="DEVELOPMENT ONLY: accept http://localhost origins and the env PIN provider",
    )
    parser.set_defaults(func=_serve)


# -- entry point --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand registers itself."""
    parser = argparse.ArgumentParser(
        prog="careid-agent",
        description="NHS Care Identity smartcard agent: reads the card over PC/SC.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging; -vvv traces card APDUs (PINs redacted)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_readers(sub)
    _register_status(sub)
    _register_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, env: CliEnv | None = None) -> int:
    """Run one subcommand; its exit status (1 with code and message on a card error)."""
    env = env or CliEnv()
    args = build_parser().parse_args(argv)
    level = _VERBOSITY[min(args.verbose, len(_VERBOSITY) - 1)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.func
    try:
        return handler(args, env)
    except (CardError, AgentError) as exc:
        return _report_error(exc, env, as_json=getattr(args, "json", False))


if __name__ == "__main__":
    sys.exit(main())
