"""`careid-devkit card insert`: errors, and a real process serving a scripted vpcd."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cardsim_profiles import FakeVpcd, h, make_test_profile

from careid_devkit.card_profile import KeyAlgorithm, load_profile, save_profile
from careid_devkit.cardsim import PIV_ATR
from careid_devkit.cli import main

SELECT = h("00 A4 04 00 05 A0 00 00 03 08")
WRONG_PIN = h("00 20 00 80 08 31 31 31 31 31 31 FF FF")
STATUS = h("00 20 00 80")


def test_missing_profile_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["card", "insert", str(tmp_path / "absent.json")]) == 2
    err = capsys.readouterr().err
    assert "devkit_card_profile_not_found" in err
    assert "careid-devkit pki issue-card" in err


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"format": "something-else"}),
        json.dumps({"format": "careid-devkit-card:1", "uuid": "555000000001"}),
    ],
)
def test_unreadable_profile_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "card.json"
    path.write_text(content)
    assert main(["card", "insert", str(path)]) == 2
    assert "devkit_card_profile_invalid" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"pin": "12ab56"}, "PIN must be 6 to 8 digits"),
        ({"pin_retries_left": 4}, "PIN retry counters"),
        ({"algorithm": KeyAlgorithm.P384}, "does not match algorithm"),
        ({"chuid_hex": "zz"}, "CHUID"),
        ({"card_guid_hex": "00"}, "GUID is not 16 bytes"),
        ({"card_guid_hex": 7}, "card_guid_hex must be a string"),
        ({"puk_retries_left": "3"}, "puk_retries_left must be a whole number"),
        ({"pin": 246810}, "PIN must be 6 to 8 digits"),
        ({"private_key_pem": "-----BEGIN PRIVATE KEY-----\n"}, "private key"),
    ],
)
def test_inconsistent_profile_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], detail: str
) -> None:
    path = tmp_path / "card.json"
    save_profile(dataclasses.replace(make_test_profile(KeyAlgorithm.P256), **change), path)  # type: ignore[arg-type]
    assert main(["card", "insert", str(path)]) == 2
    err = capsys.readouterr().err
    assert "devkit_card_profile_invalid" in err and detail in err


def test_certificate_of_another_key_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_test_profile(KeyAlgorithm.P384)
    profile = dataclasses.replace(
        make_test_profile(KeyAlgorithm.P256), certificate_pem=other.certificate_pem
    )
    path = tmp_path / "card.json"
    save_profile(profile, path)
    assert main(["card", "insert", str(path)]) == 2
    assert "not for the card's private key" in capsys.readouterr().err


class CardProcess:
    """`careid-devkit card insert` as a child process, its stdout read line by line."""

    def __init__(self, profile: Path, port: int, apdu_log: Path) -> None:
        command = [sys.executable, "-m", "careid_devkit.cli", "card", "insert", str(profile)]
        command += ["--vpcd-port", str(port), "--apdu-log", str(apdu_log)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read_lines, daemon=True)
        self.reader.start()

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def signal(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)  # reads to EOF now the process is gone; then close safely
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


def test_insert_serves_persists_counters_logs_redacted_and_stops_on_signals(
    tmp_path: Path, vpcd: FakeVpcd
) -> None:
    profile_path = tmp_path / "card.json"
    save_profile(make_test_profile(KeyAlgorithm.P256), profile_path)
    apdu_log = tmp_path / "apdu.log"

    card = CardProcess(profile_path, vpcd.port, apdu_log)
    try:
        vpcd.accept()
        assert vpcd.exchange(b"\x04") == PIV_ATR
        line = card.lines.get(timeout=10)
        assert line.startswith("Card inserted: Alex Morgan (555000000001, p256)")
        assert vpcd.exchange(SELECT) is not None
        assert vpcd.exchange(WRONG_PIN) == h("63 C2")
        assert load_profile(profile_path).pin_retries_left == 2  # persisted at once
        assert card.signal(signal.SIGTERM) == 0
        assert vpcd.receive() is None  # the card is out
    finally:
        card.kill()
    assert oct(os.stat(profile_path).st_mode & 0o777) == "0o600"
    log_text = apdu_log.read_text()
    assert "> 00 20 00 80 [9 bytes redacted]" in log_text
    assert "< 63 C2" in log_text
    assert "31 31 31 31 31 31" not in log_text

    # Inserted again, the card remembers the wrong try; Ctrl+C removes it too.
    again = CardProcess(profile_path, vpcd.port, apdu_log)
    try:
        vpcd.accept()
        assert vpcd.exchange(SELECT) is not None
        assert vpcd.exchange(STATUS) == h("63 C2")
        assert again.signal(signal.SIGINT) == 0
    finally:
        again.kill()


def test_unwritable_apdu_log_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "card.json"
    save_profile(make_test_profile(KeyAlgorithm.P256), path)
    log = tmp_path / "no-such-dir" / "apdu.log"
    assert main(["card", "insert", str(path), "--apdu-log", str(log)]) == 2
    assert "devkit_invalid_argument" in capsys.readouterr().err
