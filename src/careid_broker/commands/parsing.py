"""What every `careid-broker` subcommand's parser shares: `--config FILE` wherever it is
typed, a description, and the exit statuses in its `--help`.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Each subcommand's own `--config` lands under its own name, so that one given before
# the subcommand and one after it are both seen (argparse would let one overwrite the
# other) and two different files can be refused.
_CONFIG_AFTER = "config after "

CONFIG_HELP = "configuration file (default: $CAREID_CONFIG or config/broker.toml)"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: accepts `--config FILE` and keeps its help as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--config",
            action="append",
            type=Path,
            metavar="FILE",
            dest=_CONFIG_AFTER + self.prog,
            default=argparse.SUPPRESS,
            help=CONFIG_HELP + "; also accepted before the subcommand",
        )


def documented(description: str, exits: Mapping[int, str]) -> dict[str, Any]:
    """`add_parser` keywords: the description and an "Exit status:" epilog."""
    lines = ["Exit status:"]
    for status, meaning in sorted(exits.items()):
        lines.append(
            textwrap.fill(
                meaning, width=78, initial_indent=f"  {status}  ", subsequent_indent=" " * 5
            )
        )
    return {"description": textwrap.fill(description, width=78), "epilog": "\n".join(lines)}


def resolve_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set `args.config` from `--config` before or after the subcommand (once, or the
    same file each time); two different files are a usage error (exit 2)."""
    given: list[Path] = list(args.config or [])
    for name, value in sorted(vars(args).items()):
        if name.startswith(_CONFIG_AFTER):
            given.extend(value)
            delattr(args, name)
    distinct = _distinct(given)
    if len(distinct) > 1:
        named = " and ".join(str(path) for path in distinct)
        parser.error(f"--config names two different files ({named}): give it once")
    args.config = distinct[0] if distinct else None


def _distinct(paths: Sequence[Path]) -> list[Path]:
    seen: dict[Path, Path] = {}
    for path in paths:
        seen.setdefault(path.resolve(), path)
    return list(seen.values())


__all__ = ["CONFIG_HELP", "CommandParser", "documented", "resolve_config"]
