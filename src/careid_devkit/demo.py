"""`careid-devkit demo`: the sign-in chain on this machine, with no hardware.

Today it shows the card half of the chain: a development PKI issues Alex Morgan's card,
the virtual card goes into the "Virtual PCD 00 00" reader of a real pcscd, and the real
agent code reads it (`careid-agent status`) and signs a `careid-auth:1` challenge that
`careid_protocol` verifies. DEMO/TEST MATERIAL throughout.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from careid_devkit.card_profile import CardProfile, KeyAlgorithm, save_profile
from careid_devkit.cardsim.applet import PivApplet
from careid_devkit.cardsim.vpcd import VpcdCardClient
from careid_devkit.pcscd import PcscdUnavailable, ensure_pcscd
from careid_devkit.pki import init_pki

DEMO_PIN = "246810"
DEMO_ORIGIN = "https://broker.careid.test"
READER = "Virtual PCD 00 00"
VPCD_PORT = 35963


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo` to the `careid-devkit` subparsers."""
    parser = sub.add_parser("demo", help="run the sign-in chain with a virtual card")
    parser.add_argument(
        "--headless", action="store_true", help="show the results and exit (no waiting)"
    )
    parser.add_argument(
        "--workspace", type=Path, help="where to put the PKI and cards (default: a temp dir)"
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


def _wait_for_card(present: bool, timeout: float = 10.0) -> None:
    from careid_agent.transport import list_readers

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {r.name: r.card_present for r in list_readers()}.get(READER) is present:
            return
        time.sleep(0.05)
    raise RuntimeError(f"pcscd did not see the card {'arrive' if present else 'leave'}")


def _signature_check(profile: CardProfile) -> bool:
    """Sign a fresh challenge with the card through PC/SC and verify it as a broker would."""
    from careid_agent.card import CardService
    from careid_agent.transport import connect
    from careid_protocol.token import (
        AuthToken,
        SignatureAlgorithm,
        algorithm_for_key,
        digest_to_sign,
        ecdsa_der_to_raw,
        verify_token,
    )

    challenge = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    service = CardService(lambda: connect(READER))
    identity = service.read_identity()
    alg = algorithm_for_key(identity.certificate.public_key())
    result = service.sign(
        digest_to_sign(DEMO_ORIGIN, challenge, alg),
        alg.hash(),
        lambda _request: bytearray(profile.pin.encode()),
    )
    signature = result.signature
    if alg is not SignatureAlgorithm.RS256:
        signature = ecdsa_der_to_raw(signature, alg)
    token = AuthToken(
        certificate=result.identity.certificate_der,
        algorithm=alg,
        signature=signature,
        agent_version="demo",
    ).to_json()
    certificate = verify_token(token, DEMO_ORIGIN, challenge)
    _say(f"  origin     {DEMO_ORIGIN}")
    _say(f"  challenge  {challenge}")
    _say(f"  algorithm  {alg.value}, signature {len(signature)} bytes")
    _say(f"  verified   yes, by the certificate of {certificate.subject.rfc4514_string()}")
    return True


def run_demo(args: argparse.Namespace) -> int:
    """Set up the PKI and card, insert it, show status and a signature check."""
    try:
        pcscd = ensure_pcscd()
    except PcscdUnavailable as exc:
        print(f"careid-devkit demo: {exc}. Run `bash .ci/setup` first.", file=sys.stderr)
        return 1
    with pcscd, _workspace(args.workspace) as workspace:
        pki = init_pki(workspace / "pki", force=True)
        profile = pki.issue_card(
            uuid="555000000001", name="Alex Morgan", algorithm=KeyAlgorithm.P256, pin=DEMO_PIN
        )
        card_path = workspace / "alex.morgan.json"
        save_profile(profile, card_path)
        _say("Care Identity sign-in bridge demo (DEMO/TEST MATERIAL ONLY)")
        _say(f"  workspace  {workspace}")
        _say(f"  PKI        {pki.directory}")
        _say(f"  card       {card_path}  (Alex Morgan, UUID 555000000001, PIN {DEMO_PIN})")
        _say(f"  pcscd      {'started by the demo' if pcscd.started else 'already running'}")

        client = VpcdCardClient(
            PivApplet(profile, on_counters_changed=lambda p: save_profile(p, card_path)),
            port=VPCD_PORT,
        )
        client.start()
        try:
            if not client.wait_inserted(10):
                print("careid-devkit demo: vpcd did not take the card", file=sys.stderr)
                return 1
            _wait_for_card(True)
            _say(f"\nThe virtual card is in {READER!r}.\n\n$ careid-agent status")
            status = subprocess.run(  # noqa: S603 - our own console script
                [sys.executable, "-m", "careid_agent.cli", "status", "--reader", READER],
                check=False,
            )
            _say("\nSigning a careid-auth:1 challenge with the card, PIN from the profile:")
            _signature_check(profile)
            if status.returncode != 0:
                return status.returncode
            if args.headless:
                return 0
            _say(
                "\nThe card stays in the reader. Try `careid-agent status`,"
                " `pkcs15-tool --list-certificates` or `pkcs11-tool --login --sign`."
                "\nPress Ctrl-C to remove the card and stop."
            )
            _wait_for_interrupt()
            return 0
        finally:
            client.stop()


def _wait_for_interrupt() -> None:
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
