"""`careid-devkit card insert CARD.json`: put a virtual card in a vpcd reader until Ctrl+C."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO

from careid_devkit.card_profile import CardProfile, load_profile, save_profile
from careid_devkit.cardsim.apdu import ApduLogEntry
from careid_devkit.cardsim.applet import PivApplet
from careid_devkit.cardsim.contents import CardProfileError
from careid_devkit.cardsim.vpcd import DEFAULT_HOST, DEFAULT_PORT, VpcdCardClient
from careid_devkit.codes import DevkitCode, message_for
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

EXIT_USAGE = 2
_POLL_SECONDS = 0.2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `card` command group to the `careid-devkit` subparsers."""
    card = sub.add_parser("card", help="the virtual PIV card (vpcd)")
    card_sub = card.add_subparsers(dest="card_command", required=True, metavar="ACTION")
    insert = card_sub.add_parser(
        "insert",
        help="insert a virtual card into a vpcd reader until Ctrl+C or SIGTERM",
        description=(
            "Serve CARD.json as a PIV card in vsmartcard's vpcd reader (pcscd must be"
            " running). Retry counters are written back to CARD.json whenever they change."
            " DEMO/TEST MATERIAL ONLY."
        ),
    )
    insert.add_argument("profile", type=Path, metavar="CARD.json", help="card profile")
    insert.add_argument("--vpcd-host", default=DEFAULT_HOST, help="vpcd address")
    insert.add_argument(
        "--vpcd-port",
        type=int,
        default=DEFAULT_PORT,
        help="vpcd port: 35963 = reader 'Virtual PCD 00 00', 35964 = '00 01'",
    )
    insert.add_argument(
        "--apdu-log", type=Path, metavar="FILE", help="append APDUs here (PINs redacted)"
    )
    insert.set_defaults(func=insert_card)


def _fail(code: DevkitCode | ErrorCode, detail: str) -> int:
    print(f"careid-devkit card: {message_for(code)} [{code}: {detail}]", file=sys.stderr)
    return EXIT_USAGE


def _load(path: Path) -> CardProfile:
    try:
        return load_profile(path)
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        # JSONDecodeError is a ValueError; a hand-edited file can fail in any of these.
        raise CardProfileError(f"{path} is not a card profile: {exc}") from exc


def insert_card(args: argparse.Namespace) -> int:
    """Serve the card until SIGINT/SIGTERM; exit 0 then, 2 on a bad profile."""
    path: Path = args.profile
    if not path.is_file():
        return _fail(DevkitCode.DEVKIT_CARD_PROFILE_NOT_FOUND, str(path))

    def persist(changed: CardProfile) -> None:
        # So a PIN blocked now is still blocked when the card is inserted again.
        save_profile(changed, path)

    with contextlib.ExitStack() as stack:
        apdu_log: Callable[[ApduLogEntry], None] | None = None
        if args.apdu_log is not None:
            try:
                stream = stack.enter_context(args.apdu_log.open("a", encoding="utf-8"))
            except OSError as exc:
                return _fail(DevkitCode.DEVKIT_INVALID_ARGUMENT, f"APDU log: {exc}")
            apdu_log = _apdu_writer(stream)
        try:
            applet = PivApplet(_load(path), on_counters_changed=persist, apdu_log=apdu_log)
        except CardProfileError as exc:
            return _fail(DevkitCode.DEVKIT_CARD_PROFILE_INVALID, exc.detail)
        return _serve(applet, args.vpcd_host, args.vpcd_port)


def _apdu_writer(stream: IO[str]) -> Callable[[ApduLogEntry], None]:
    lock = threading.Lock()

    def write(entry: ApduLogEntry) -> None:
        with lock:
            stream.write(f"{entry.time:.6f} {entry.render()}\n")
            stream.flush()

    return write


def _serve(applet: PivApplet, host: str, port: int) -> int:
    # The handler only flips a flag: taking a lock (Event.set) inside a signal handler
    # can deadlock against the main thread that holds it.
    removed: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        removed.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    client = VpcdCardClient(applet, host=host, port=port)
    client.start()
    try:
        log.info("waiting for vpcd at %s:%s (is pcscd running?)", host, port)
        announced = False
        while not removed:
            if not announced and client.wait_inserted(timeout=_POLL_SECONDS):
                profile = applet.profile
                print(
                    f"Card inserted: {profile.name} ({profile.uuid}, {profile.algorithm})"
                    f" in the vpcd reader at {host}:{port}. Ctrl+C removes it.",
                    flush=True,
                )
                announced = True
            elif announced:
                time.sleep(_POLL_SECONDS)
    finally:
        client.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
