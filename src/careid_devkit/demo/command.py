"""`careid-devkit demo`: the whole sign-in chain with one command, until Ctrl-C.

It prints the URLs and the demo accounts, inserts Alex Morgan's card to check the card
path end to end, then waits. `--check` (for CI and tests) stops after the start-up
checks with status 0 when every part answered. DEMO/TEST MATERIAL throughout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from careid_devkit.demo.accounts import DEMO_ACCOUNTS, DEMO_PASSWORD, DEMO_PIN
from careid_devkit.demo.chain import ChainSettings, DemoChain, PartMissingError
from careid_devkit.demo.checks import (
    agent_signature_check,
    agent_status,
    check_services,
    pcsc_signature_check,
    wait_for_agent_card,
)
from careid_devkit.demo.ports import DemoPorts, PortInUseError
from careid_devkit.demo.processes import ServiceFailedError

EXIT_FAILED = 1
EXIT_REFUSED = 2
CHECK_CARD = "555000000001"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo` to the `careid-devkit` subparsers."""
    parser = sub.add_parser(
        "demo",
        help="run the whole sign-in chain on this machine (DEMO/TEST MATERIAL)",
        description="Start slapd, the OCSP/CRL responder, the broker, the webmail, the agent,"
        " pcscd and the card tray, with a development PKI and a card for every demo account."
        " Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="open no browser; the agent takes the demo PIN from the environment",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="stop after the start-up checks (exit 0 when every part answered)",
    )
    parser.add_argument(
        "--workspace", type=Path, help="where to put the PKI, cards, settings and logs"
    )
    defaults = DemoPorts()
    for part, port in (
        ("broker", defaults.broker),
        ("webmail", defaults.webmail),
        ("tray", defaults.tray),
        ("agent", defaults.agent),
        ("pki", defaults.pki),
        ("ldap", defaults.ldap),
    ):
        parser.add_argument(
            f"--{part}-port",
            type=int,
            default=port,
            metavar="PORT",
            help=f"default {port or 'a free port'}; 0 picks a free port",
        )
    parser.set_defaults(func=run_demo)


def _say(text: str = "") -> None:
    print(text, flush=True)


@contextlib.contextmanager
def _workspace(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="careid-demo-") as tmp:
        yield Path(tmp)


class _Stop(Exception):
    """SIGTERM: stop as Ctrl-C does."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop()


def run_demo(args: argparse.Namespace) -> int:
    """Start the chain, show it, wait for Ctrl-C/SIGTERM or a failure, stop it all."""
    ports = DemoPorts(
        broker=args.broker_port,
        webmail=args.webmail_port,
        tray=args.tray_port,
        agent=args.agent_port,
        pki=args.pki_port,
        ldap=args.ldap_port,
    )
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with _workspace(args.workspace) as workspace:
            try:
                chain = DemoChain(
                    ChainSettings(workspace=workspace, ports=ports, headless=args.headless)
                )
            except PortInUseError as exc:
                print(f"careid-devkit demo: error [{exc.code}]: {exc}", file=sys.stderr)
                return EXIT_REFUSED
            try:
                return _run(chain, args)
            except (_Stop, KeyboardInterrupt):
                _say("\nStopping the demo…")
                return 0
            finally:
                # A second Ctrl-C must not strand half the chain.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                chain.stop()
                _say("Stopped every part the demo started.")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(chain: DemoChain, args: argparse.Namespace) -> int:
    _say("Care Identity sign-in bridge demo (DEMO/TEST MATERIAL ONLY)")
    _say(f"  workspace  {chain.workspace.root}")
    _say("Starting slapd, the OCSP/CRL responder, the broker, the webmail, the agent,")
    _say("pcscd and the card tray…")
    started = time.monotonic()
    try:
        chain.start()
    except (PartMissingError, ServiceFailedError) as exc:
        print(f"careid-devkit demo: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _say(f"Everything answers ({time.monotonic() - started:.1f} s).\n")
    _print_urls(chain)
    _print_accounts(chain)
    if not _card_check(chain):
        return EXIT_FAILED
    if args.check:
        return _check(chain)
    _say("\nOpen the webmail and sign in; put cards in the reader from the card tray.")
    if chain.settings.headless:
        _say(f"The agent enters the PIN itself ({DEMO_PIN}: --headless).")
    else:
        _say("The agent asks for the PIN in a window (or in this terminal).")
        _open_browser(chain)
    _say("Press Ctrl-C to stop everything.")
    return _wait(chain)


def _print_urls(chain: DemoChain) -> None:
    urls = chain.urls
    assert chain.slapd is not None  # noqa: S101 - started
    rows = (
        ("webmail", f"{urls.webmail}/", "the demo web app: sign in here"),
        ("broker", f"{urls.broker}/", "the sign-in service (OpenID Provider)"),
        ("card tray", f"{urls.tray}/", f"insert and remove cards ({chain.settings.reader})"),
        ("agent", f"{urls.agent}/v1/status", "the workstation agent's API"),
        ("OCSP/CRL", f"{urls.pki}/ocsp", "the development PKI's responder"),
        ("directory", chain.slapd.url, "slapd with config/ldap/demo.ldif"),
    )
    for name, url, what in rows:
        _say(f"  {name:<10} {url:<36} {what}")
    _say(f"  logs       {chain.workspace.logs_dir}")


def _print_accounts(chain: DemoChain) -> None:
    _say(f"\nDemo accounts (password {DEMO_PASSWORD}, every card's PIN {DEMO_PIN}):")
    for account in DEMO_ACCOUNTS:
        _say(f"  {account.mail:<22} {account.uuid}  {account.org:<7} {account.note}")
    _say("Cards in the tray:")
    for card in chain.tray.cards:
        _say(f"  {card.card_id:<24} {card.name:<19} {card.kind.description}")


def _card_check(chain: DemoChain) -> bool:
    _say(f"\nChecking the card path: Alex Morgan's card into {chain.settings.reader!r}.")
    card = chain.tray.insert(CHECK_CARD)
    try:
        if not wait_for_agent_card(chain, card.uuid):
            _say("  the agent did not see the card")
            return False
        status = agent_status(chain).get("card")
        if isinstance(status, dict):
            _say(f"  Card holder:         {status.get('holderName')}")
            _say(f"  Care Identity UUID:  {status.get('uuid')}")
            _say(f"  Key:                 {status.get('keyAlgorithm')}")
            _say(f"  PIN tries left:      {status.get('pinTriesLeft')}")
        _say("Signing a careid-auth:1 challenge through PC/SC, PIN from the card profile:")
        ok = pcsc_signature_check(chain, card.load(), _say)
        if ok and chain.settings.headless:
            _say("And through the running agent's API:")
            ok = agent_signature_check(chain, _say)
        return ok
    finally:
        chain.tray.remove()
        _say("The card is out again; the reader is empty.")


def _check(chain: DemoChain) -> int:
    _say("\nEvery part:")
    checks = check_services(chain)
    for check in checks:
        _say(f"  {'ok  ' if check.ok else 'FAIL'} {check.name:<20} {check.url}  {check.detail}")
    return 0 if all(check.ok for check in checks) else EXIT_FAILED


def _open_browser(chain: DemoChain) -> None:
    # With no display, webbrowser would start a text browser in this terminal.
    if sys.platform == "darwin" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        webbrowser.open(f"{chain.urls.tray}/", new=1)
        webbrowser.open(f"{chain.urls.webmail}/", new=2)
    else:
        _say("(No display: open the webmail address above in a browser.)")


def _wait(chain: DemoChain) -> int:
    while True:
        failure = chain.failure()
        if failure is not None:
            print(f"careid-devkit demo: error [{failure.code}]: {failure}", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.5)
