"""`careid-agent`: look at readers and the card, and run the localhost service (`serve`).

Each subcommand lives in its own `_register_*` function that adds a subparser and sets
`func=handler`, with `handler(args, env) -> int`.
Errors print their stable code and plain message on stderr and exit 1, and log what IT
support needs (the error's detail) at WARNING; `status` prints that detail itself and
has exit statuses of its own (`StatusExit`, listed in its --help).
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
from enum import IntEnum, unique
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
    PcscUnavailableError,
    PinBlockedError,
)
from careid_agent.reader_check import ReaderCheck, ServiceState, check_readers
from careid_agent.transport import CardConnection, ReaderInfo

log = logging.getLogger(__name__)

_VERBOSITY = [logging.WARNING, logging.INFO, logging.DEBUG, TRACE]


def _pcsc_scan_readers() -> list[ReaderInfo]:
    return transport.scan_readers()


def _pcsc_connect(reader: str | None) -> CardConnection:
    return transport.connect(reader)


@dataclass(frozen=True, kw_only=True)
class CliEnv:
    """What the commands touch outside the process; tests pass an in-process card."""

    list_readers: Callable[[], list[ReaderInfo]] = _pcsc_scan_readers
    """Raises PcscUnavailableError when the PC/SC service does not answer."""
    connect: Callable[[str | None], CardConnection] = _pcsc_connect
    config_paths: Callable[[], list[Path]] = default_config_paths
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)


Handler = Callable[[argparse.Namespace, CliEnv], int]


def _report_error(
    error: CardError | AgentError, env: CliEnv, *, as_json: bool, log_detail: bool = True
) -> int:
    # The message is the plain one a clinician gets; the detail is for IT support.
    if log_detail and error.detail:
        log.warning("%s: %s", error.code.value, error.detail)
    if as_json:
        body = {"error": error.code.value, "message": error.message}
        if error.detail:
            body["detail"] = error.detail
        print(json.dumps(body), file=env.stderr)
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


@unique
class StatusExit(IntEnum):
    """The exit statuses of `careid-agent status`, for scripts (listed in its --help)."""

    OK = 0
    CARD = 1
    USAGE = 2
    SERVICE = 3
    READER = 4
    SETTINGS = 5


_STATUS_EPILOG = """\
exit status (when several apply, the first of 3, 4, 1, 5):
  0  a reader and its card are ready for sign-in
  1  the card cannot be used: none in the reader, unreadable, not a Care Identity
     card, or its PIN is blocked
  2  the command line is not valid
  3  the PC/SC service (pcscd; Windows' or macOS's smart card service) is not
     running or fails
  4  no reader, or the reader setting names no reader or several
  5  the settings file is not valid (the readers are checked with --reader alone)"""

_LABEL_WIDTH = 20


@dataclass(frozen=True, kw_only=True)
class _ReaderSettings:
    reader: str | None
    preference: tuple[str, ...]
    source: str
    """Where `reader` came from, for people."""
    path: Path | None
    problem: ConfigError | None


def _reader_settings(args: argparse.Namespace, env: CliEnv) -> _ReaderSettings:
    path = args.config or find_config(env.config_paths())
    problem: ConfigError | None = None
    reader: str | None = args.reader
    preference: tuple[str, ...] = ()
    if path is not None:
        try:
            config = load_config(path, overrides=Overrides(reader=args.reader))
        except ConfigError as exc:
            problem = exc
        else:
            reader, preference = config.reader, config.reader_preference
    if args.reader is not None:
        source = "--reader"
    elif reader is not None:
        source = str(path)
    else:
        source = ""
    return _ReaderSettings(
        reader=reader, preference=preference, source=source, path=path, problem=problem
    )


def _print_rows(rows: Sequence[tuple[str, Sequence[str]]], env: CliEnv) -> None:
    for label, values in rows:
        first, *more = values or [""]
        print(f"{label + ':':<{_LABEL_WIDTH}} {first}".rstrip(), file=env.stdout)
        for value in more:
            print(f"{'':<{_LABEL_WIDTH}} {value}", file=env.stdout)


def _print_reader_check(check: ReaderCheck, settings: _ReaderSettings, env: CliEnv) -> None:
    if settings.path is None:
        settings_file = "none found (the agent's defaults)"
    elif settings.problem is not None:
        settings_file = f"{settings.path} (not valid: see below)"
    else:
        settings_file = str(settings.path)
    if check.setting is None:
        setting = "none: the first reader holding a card"
    else:
        setting = f"{check.setting!r} (from {settings.source})"
    service = {
        ServiceState.RUNNING: "running",
        ServiceState.NOT_RUNNING: "not running",
        ServiceState.FAILING: "answers with an error",
    }[check.service]
    rows: list[tuple[str, Sequence[str]]] = [
        ("Settings file", [settings_file]),
        ("Reader setting", [setting]),
    ]
    if check.preference:
        rows.append(("Reader preference", [", ".join(map(repr, check.preference))]))
    rows.append(("PC/SC service", [service]))
    if check.service is ServiceState.RUNNING:
        listed = [
            f"{r.name} ({'card present' if r.card_present else 'no card'})" for r in check.readers
        ]
        rows.append(("Readers", listed or ["none"]))
        if check.setting is not None:
            matching = [r.name for r in check.matching] or ["none"]
            if len(check.matching) > 1:
                matching.append("(several match: set the full name of one)")
            rows.append(("Matching readers", matching))
    if check.chosen is not None:
        used = check.chosen.name
    elif check.setting is not None and len(check.matching) == 1:
        used = f"{check.matching[0].name} (no card in it)"
    else:
        used = "none"
    rows.append(("Reader used", [used]))
    if check.problem is not None:
        rows.append(("Problem", [check.problem.detail or check.problem.message]))
    if settings.problem is not None:
        rows.append(("Settings problem", [settings.problem.message]))
    _print_rows(rows, env)


def _print_status(status: CardStatus, env: CliEnv) -> None:
    if status.pin_blocked:
        pin = "blocked"
    elif status.pin_tries_left is None:
        pin = "verified"
    else:
        pin = str(status.pin_tries_left)
    validity = "" if status.certificate_valid else " (not valid now)"
    rows = [
        ("Card holder", status.holder_name),
        ("Care Identity UUID", status.uuid or "(none found in the certificate)"),
        ("Issuer", status.issuer),
        ("Certificate expires", f"{status.not_after:%Y-%m-%d %H:%M:%S} UTC{validity}"),
        ("Key algorithm", status.key_description),
        ("PIN tries left", pin),
    ]
    if status.card_id:
        rows.append(("Card ID", status.card_id))
    _print_rows([(label, [value]) for label, value in rows], env)


def _exit_for(error: CardError | AgentError) -> StatusExit:
    if isinstance(error, PcscUnavailableError):
        return StatusExit.SERVICE
    if isinstance(error, NoReaderError):
        return StatusExit.READER
    return StatusExit.CARD


def _status(args: argparse.Namespace, env: CliEnv) -> int:
    settings = _reader_settings(args, env)
    check = check_readers(env.list_readers, settings.reader, settings.preference)
    problem: CardError | AgentError | None = check.problem
    exit_status = StatusExit.OK
    if check.service is not ServiceState.RUNNING:
        exit_status = StatusExit.SERVICE
    elif problem is not None:
        exit_status = _exit_for(problem)
    card: CardStatus | None = None
    if check.chosen is not None:
        # By its full name: the card read is in the reader the check reported.
        service = CardService(functools.partial(env.connect, check.chosen.name))
        try:
            card = service.status()
        except CardError as exc:
            problem, exit_status = exc, _exit_for(exc)
        else:
            if card.pin_blocked:
                # Readable but unusable for sign-in: say so and fail, for scripts.
                problem, exit_status = PinBlockedError(), StatusExit.CARD
    if args.json:
        body = {"readerCheck": check.to_json()} | (card.to_json() if card else {})
        print(json.dumps(body, indent=2), file=env.stdout)
    else:
        _print_reader_check(check, settings, env)
        if card is not None:
            _print_status(card, env)
    if problem is not None:
        _report_error(problem, env, as_json=args.json, log_detail=False)
    elif settings.problem is not None:
        _report_error(settings.problem, env, as_json=args.json, log_detail=False)
        exit_status = StatusExit.SETTINGS
    return int(exit_status)


def _register_status(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="check the PC/SC service and the readers, then show the card holder,"
        " certificate and PIN tries left (no PIN needed)",
        description="Check what a sign-in needs, in the order it needs it: the PC/SC"
        " service, the reader the settings name (or the first holding a card), then the"
        " card. Settings come from --config, else the first of "
        + ", ".join(str(p) for p in default_config_paths())
        + ".",
        epilog=_STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    parser.add_argument(
        "--reader",
        metavar="NAME",
        help="reader name (or a unique part of it); replaces the settings file's",
    )
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
