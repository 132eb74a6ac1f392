"""`careid-devkit demo`: the README's first command, and the card tray on a real reader.

The demo is run as a subprocess on free ports, as a user would run it: it must start
every part, check the card path end to end, and stop every process it started — after
`--check`, on SIGTERM, and when one of its parts dies.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from careid_agent.card import CardService
from careid_agent.errors import WrongPinError
from careid_agent.transport import connect
from careid_devkit.demo import demo_cards, port_is_free
from careid_devkit.demo.workspace import Workspace, issue_demo_cards
from careid_devkit.pcscd import Pcscd
from careid_devkit.slapd import DEBIAN_SBIN
from careid_devkit.tray import CardTray, pcsc_reader_state

from .conftest import READER, wait_for_reader

pytestmark = [pytest.mark.pcsc, pytest.mark.slapd]

FREE_PORTS = [f"--{part}-port=0" for part in ("broker", "webmail", "tray", "agent", "pki", "ldap")]
URL = re.compile(r"https?://(?:localhost|127\.0\.0\.1):(\d+)|ldap://127\.0\.0\.1:(\d+)")


@pytest.fixture
def demo_ready(pcsc: Pcscd) -> None:
    if not os.access(DEBIAN_SBIN / "slapd", os.X_OK):
        pytest.skip("needs OpenLDAP slapd (Debian package slapd)")


def _demo(workspace: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "careid_devkit.cli", "demo", "--headless"] + [
        "--workspace",
        str(workspace),
        *FREE_PORTS,
        *extra,
    ]


def _ports(output: str) -> set[int]:
    return {int(a or b) for a, b in URL.findall(output)}


def _children(pid: int) -> dict[int, str]:
    """The demo's child processes (pid → command line), from /proc."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            found[int(child)] = cmdline.decode(errors="replace")
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def running_demo(demo_ready: None, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """The demo, started and past its start-up checks (it waits for Ctrl-C)."""
    with subprocess.Popen(
        _demo(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        try:
            ready = bool(lines) and lines[-1].startswith("Press Ctrl-C")
            if not ready:
                process.terminate()
            assert ready, "".join(lines) + process.stderr.read()
            process.output = "".join(lines)  # type: ignore[attr-defined]
            yield process
        finally:
            if process.poll() is None:
                process.terminate()  # the demo stops its parts on SIGTERM
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait(10)


def test_headless_check_starts_every_part_checks_the_card_and_stops(
    demo_ready: None, tmp_path: Path
) -> None:
    result = subprocess.run(
        _demo(tmp_path, "--check"), capture_output=True, text=True, timeout=180, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # The card path: the agent reads Alex's card and signs, through PC/SC and its API.
    assert "Card holder:         Alex Morgan" in out
    assert "Care Identity UUID:  555000000001" in out
    assert out.count("verified   yes") == 2
    for part in ("broker", "webmail", "agent", "card tray", "OCSP/CRL responder", "directory"):
        assert re.search(rf"^  ok   {re.escape(part)}", out, re.MULTILINE), part
    for uid in ("alex.morgan", "sam.patel", "jo.bloggs", "lee.admin", "kim.taylor"):
        assert f"{uid}@nhs.net" in out
    assert "555000000099" in out and "Certificate revoked" in out
    # It left its material in the workspace, and nothing behind it running.
    assert (tmp_path / "pki" / "ca.json").is_file()
    assert (tmp_path / "cards" / "cards.json").is_file()
    assert "careid-broker" in (tmp_path / "broker" / "broker.toml").read_text()
    ports = _ports(out)
    assert len(ports) >= 6
    # Processes stopped by the demo may take a moment to release their sockets.
    deadline = time.monotonic() + 10
    while (taken := {port for port in ports if not port_is_free(port)}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert not taken, f"still listening after the demo stopped: {sorted(taken)}"
    wait_for_reader(False)


def test_sigterm_stops_every_part(running_demo: subprocess.Popen[str]) -> None:
    children = _children(running_demo.pid)
    commands = " ".join(children.values())
    for part in ("careid_broker.cli", "careid_devkit.cli webmail", "careid_agent.cli serve"):
        assert part in commands
    running_demo.send_signal(signal.SIGTERM)
    assert running_demo.wait(30) == 0
    assert running_demo.stdout is not None
    assert "Stopped every part the demo started." in running_demo.stdout.read()
    assert all(_gone(pid) for pid in children)
    ports = _ports(running_demo.output)  # type: ignore[attr-defined]
    assert all(port_is_free(port) for port in ports)


def test_a_part_that_dies_stops_the_demo_with_a_clear_message(
    running_demo: subprocess.Popen[str],
) -> None:
    children = _children(running_demo.pid)
    webmail = next(pid for pid, cmd in children.items() if "webmail" in cmd)
    os.kill(webmail, signal.SIGKILL)  # the demo's own child
    assert running_demo.wait(30) == 1
    assert running_demo.stderr is not None
    err = running_demo.stderr.read()
    assert "devkit_demo_service_failed" in err
    assert "the webmail exited with status -9" in err
    assert "webmail.log" in err
    assert all(_gone(pid) for pid in children)


def test_parts_do_not_outlive_a_killed_demo(running_demo: subprocess.Popen[str]) -> None:
    children = _children(running_demo.pid)
    services = [pid for pid, cmd in children.items() if "careid_" in cmd]
    assert len(services) == 3  # broker, webmail, agent
    os.kill(running_demo.pid, signal.SIGKILL)  # no chance to stop anything itself
    running_demo.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(_gone(pid) for pid in services):
        time.sleep(0.1)
    assert all(_gone(pid) for pid in services)
    # slapd (careid_devkit.slapd) is not started through the demo's process handles: stop
    # the one this demo left, by its own pid.
    for pid, cmd in children.items():
        if "slapd" in cmd and not _gone(pid):
            os.kill(pid, signal.SIGTERM)


def test_tray_serves_cards_in_the_real_reader_and_keeps_their_counters(
    pcsc: Pcscd, tmp_path: Path
) -> None:
    specs = [spec for spec in demo_cards() if spec.card_id in ("555000000001", "555000000003")]
    issued = issue_demo_cards(Workspace(root=tmp_path), pki_base_url="http://127.0.0.1:5080")
    cards = [card for card in issued.cards if card.card_id in {s.card_id for s in specs}]
    tray = CardTray(cards, reader=READER, reader_state=pcsc_reader_state(READER))
    try:
        alex = tray.insert("555000000001")
        wait_for_reader(True)
        service = CardService(lambda: connect(READER))
        assert service.status().uuid == "555000000001"
        with pytest.raises(WrongPinError) as wrong:
            service.sign(b"\0" * 32, hashes.SHA256(), lambda _request: bytearray(b"999999"))
        assert wrong.value.retries_left == 2
        # Written back to the profile at once: the tray shows it, a re-insertion keeps it.
        assert alex.load().pin_retries_left == 2
        assert {v.card.card_id: v.pin_tries_left for v in tray.views()}["555000000001"] == 2
        # Another card: Alex's leaves the reader first, and comes back with its counters.
        tray.insert("555000000003")
        assert CardService(lambda: connect(READER)).status().uuid == "555000000003"
        tray.insert("555000000001")
        assert CardService(lambda: connect(READER)).status().pin_tries_left == 2
        assert tray.remove() is alex
        assert pcsc_reader_state(READER)() is False
    finally:
        tray.close()
    wait_for_reader(False)
