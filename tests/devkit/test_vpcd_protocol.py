"""VpcdCardClient against a scripted vpcd (a loopback TCP server played by the test)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from cardsim_profiles import FakeVpcd, h, make_test_profile

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.cardsim import PIV_ATR, PivApplet, VpcdCardClient

SELECT = h("00 A4 04 00 05 A0 00 00 03 08")
SELECT_ANSWER = h("61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08 90 00")
RIGHT_PIN = h("00 20 00 80 08 32 34 36 38 31 30 FF FF")
STATUS = h("00 20 00 80")


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


def make_client(port: int, **options: object) -> VpcdCardClient:
    applet = PivApplet(make_test_profile(KeyAlgorithm.P256))
    return VpcdCardClient(applet, port=port, **options)  # type: ignore[arg-type]


def test_control_messages_and_apdus(vpcd: FakeVpcd) -> None:
    client = make_client(vpcd.port)
    client.start()
    try:
        vpcd.accept()
        assert not client.inserted
        vpcd.send(b"\x01")  # power on: no reply
        assert vpcd.exchange(b"\x04") == PIV_ATR  # the first reply is the ATR's
        assert client.wait_inserted(timeout=1)
        assert vpcd.exchange(SELECT) == SELECT_ANSWER
        assert vpcd.exchange(RIGHT_PIN) == h("90 00")
        vpcd.send(b"\x02")  # reset: PIN state and selection are gone
        assert vpcd.exchange(STATUS) == h("6D 00")
        assert vpcd.exchange(SELECT) == SELECT_ANSWER
        assert vpcd.exchange(STATUS) == h("63 C3")
        vpcd.send(b"\x00")  # power off
        counters = client.counters
        assert counters.commands == 5
        assert counters.command_bytes == 2 * len(SELECT) + len(RIGHT_PIN) + 2 * len(STATUS)
        assert counters.response_bytes == 2 * len(SELECT_ANSWER) + 6
    finally:
        client.stop()


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="needs Linux TCP_QUICKACK")
def test_split_writes_do_not_stall_on_delayed_ack(vpcd: FakeVpcd) -> None:
    client = make_client(vpcd.port)
    client.start()
    try:
        vpcd.accept()
        assert vpcd.exchange(SELECT) == SELECT_ANSWER
        start = time.perf_counter()
        for _ in range(50):
            assert vpcd.exchange(STATUS) == h("63 C3")
        elapsed = time.perf_counter() - start
        # Without TCP_QUICKACK each exchange waits ~40 ms for a delayed ACK (2 s total).
        assert elapsed < 1.0, f"50 exchanges took {elapsed:.2f} s"
    finally:
        client.stop()


def test_stop_removes_the_card_and_is_idempotent(vpcd: FakeVpcd) -> None:
    client = make_client(vpcd.port)
    client.start()
    vpcd.accept()
    assert vpcd.exchange(b"\x04") == PIV_ATR
    stoppers = [threading.Thread(target=client.stop) for _ in range(3)]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(5)
    assert vpcd.receive() is None  # the socket is closed: the card is out
    assert not client.inserted
    client.stop()


def test_on_command_false_yanks_the_card_without_an_answer(vpcd: FakeVpcd) -> None:
    seen: list[bytes] = []

    def on_command(apdu: bytes) -> bool:
        seen.append(apdu)
        return apdu[1] != 0x20  # pull the card out as the VERIFY arrives

    client = make_client(vpcd.port, on_command=on_command)
    client.start()
    try:
        vpcd.accept()
        assert vpcd.exchange(SELECT) == SELECT_ANSWER
        assert vpcd.exchange(RIGHT_PIN) is None
        assert seen == [SELECT, RIGHT_PIN]
        assert client.counters.commands == 1
        assert not client.applet.pin_verified  # never processed
        # The card stays out until it is inserted again.
        vpcd.server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            vpcd.server.accept()
        vpcd.server.settimeout(5)
        client.start()
        vpcd.accept()
        assert vpcd.exchange(b"\x04") == PIV_ATR
    finally:
        client.stop()


def test_reconnects_when_vpcd_drops_the_connection(vpcd: FakeVpcd) -> None:
    client = make_client(vpcd.port)
    client.start()
    try:
        first = vpcd.accept()
        assert vpcd.exchange(SELECT) == SELECT_ANSWER
        assert vpcd.exchange(RIGHT_PIN) == h("90 00")
        first.close()  # pcscd restarted, say
        vpcd.accept()
        assert vpcd.exchange(SELECT) == SELECT_ANSWER
        assert vpcd.exchange(STATUS) == h("63 C3")  # a fresh power-up: PIN not verified
    finally:
        client.stop()


def test_waits_with_backoff_until_vpcd_listens() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on `port` now
    client = make_client(port, max_backoff=0.2)
    client.start()
    try:
        time.sleep(0.5)
        assert not client.inserted
        late = FakeVpcd(port)
        try:
            late.accept()
            assert late.exchange(b"\x04") == PIV_ATR
            assert client.wait_inserted(timeout=1)
        finally:
            late.close()
    finally:
        client.stop()


def test_start_twice_is_refused(vpcd: FakeVpcd) -> None:
    client = make_client(vpcd.port)
    client.start()
    try:
        with pytest.raises(RuntimeError):
            client.start()
    finally:
        client.stop()
