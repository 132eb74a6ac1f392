"""`careid-devkit`: the development PKI, the virtual card and the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from careid_devkit.cardsim.commands import register as register_card
from careid_devkit.demo import register as register_demo
from careid_devkit.pki_commands import register as register_pki
from careid_devkit.webmail.commands import register as register_webmail


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each area registers its own subcommands."""
    parser = argparse.ArgumentParser(
        prog="careid-devkit",
        description="Development PKI, virtual PIV card and demo (DEMO/TEST MATERIAL ONLY).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_pki(sub)
    register_card(sub)
    register_demo(sub)
    register_webmail(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
