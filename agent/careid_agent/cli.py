"""`careid-agent`: look at readers and the card; later, run the localhost service.

Each subcommand lives in its own `_register_*` function that adds a subparser and sets
`func=handler`, with `handler(args, env) -> int`; `serve` will be added the same way.
Errors print their stable code and plain message on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from careid_agent import __version__, transport
from careid_agent.apdu import TRACE
from careid_agent.card import CardService, CardStatus
from careid_agent.errors import AgentError, CardError, NoReaderError, PinBlockedError
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
