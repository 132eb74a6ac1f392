"""The virtual PIV applet's PIN and PUK handling, counters callback and APDU log redaction."""

from __future__ import annotations

import logging

import pytest
from cardsim_profiles import h, make_test_profile

from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.cardsim import ApduLogEntry, Direction, InProcessConnection, PivApplet

SELECT = h("00 A4 04 00 05 A0 00 00 03 08")


def pin_apdu(pin: str) -> bytes:
    return h("00 20 00 80 08") + pin.encode().ljust(8, b"\xff")


def block(value: str) -> bytes:
    return value.encode().ljust(8, b"\xff")


RIGHT = pin_apdu("246810")
WRONG = pin_apdu("111111")
STATUS = h("00 20 00 80")


class Card:
    """An in-process card that records every profile the counters callback receives."""

    def __init__(self, profile: CardProfile | None = None) -> None:
        self.saved: list[CardProfile] = []
        self.log: list[ApduLogEntry] = []
        self.applet = PivApplet(
            profile or make_test_profile(KeyAlgorithm.P256),
            on_counters_changed=self.saved.append,
            apdu_log=self.log.append,
            clock=lambda: 1700000000.0,
        )
        self.conn = InProcessConnection(self.applet)
        self.select()

    def select(self) -> None:
        assert self.conn.transmit(SELECT)[1] == 0x9000

    def sw(self, apdu: bytes) -> int:
        data, sw = self.conn.transmit(apdu)
        assert data == b""
        return sw


def test_verify_right_pin_then_status_query_in_both_forms() -> None:
    card = Card()
    assert card.sw(STATUS) == 0x63C3
    assert card.sw(h("00 20 00 80 00")) == 0x63C3
    assert card.sw(RIGHT) == 0x9000
    assert card.applet.pin_verified
    assert card.sw(STATUS) == 0x9000
    assert card.sw(h("00 20 00 80 00")) == 0x9000
    assert card.saved == []  # counters were full and stay full: nothing to persist


def test_wrong_pins_count_down_to_blocked_even_for_the_right_pin() -> None:
    card = Card()
    assert [card.sw(WRONG) for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert card.sw(RIGHT) == 0x6983
    assert card.sw(STATUS) == 0x6983
    assert not card.applet.pin_verified
    assert [p.pin_retries_left for p in card.saved] == [2, 1, 0]


def test_a_right_pin_restores_the_retries() -> None:
    card = Card()
    assert card.sw(WRONG) == 0x63C2
    assert card.sw(STATUS) == 0x63C2  # a status query costs no try
    assert card.sw(RIGHT) == 0x9000
    assert card.sw(WRONG) == 0x63C2
    assert not card.applet.pin_verified  # a wrong PIN drops the verified state
    assert [p.pin_retries_left for p in card.saved] == [2, 3, 2]


def test_a_blocked_profile_stays_blocked_on_reinsertion() -> None:
    blocked = make_test_profile(KeyAlgorithm.P256).with_counters(
        pin_retries_left=0, puk_retries_left=3
    )
    card = Card(blocked)
    assert card.sw(RIGHT) == 0x6983


def test_logout_and_reset_clear_the_pin_state_but_reselect_does_not() -> None:
    card = Card()
    assert card.sw(RIGHT) == 0x9000
    card.select()
    assert card.sw(STATUS) == 0x9000
    assert card.sw(h("00 20 FF 80")) == 0x9000
    assert card.sw(STATUS) == 0x63C3
    assert card.sw(RIGHT) == 0x9000
    card.conn.reset()
    card.select()
    assert card.sw(STATUS) == 0x63C3


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00 20 00 80 06 32 34 36 38 31 30", 0x6A80),  # not padded to 8
        ("00 20 00 00 08 32 34 36 38 31 30 FF FF", 0x6A88),  # global PIN: none here
        ("00 20 00 81 08 31 33 35 37 39 31 33 35", 0x6A88),  # the PUK cannot be verified
        ("00 20 01 80 08 32 34 36 38 31 30 FF FF", 0x6A86),
    ],
)
def test_verify_errors_cost_no_try(apdu: str, sw: int) -> None:
    card = Card()
    assert card.sw(h(apdu)) == sw
    assert card.sw(STATUS) == 0x63C3


def test_change_pin() -> None:
    card = Card()
    assert card.sw(h("00 24 00 80 10") + block("111111") + block("13572468")) == 0x63C2
    assert card.sw(h("00 24 00 80 10") + block("246810") + block("13572468")) == 0x9000
    assert card.saved[-1].pin == "13572468"
    assert card.saved[-1].pin_retries_left == 3
    assert card.sw(RIGHT) == 0x63C2
    assert card.sw(pin_apdu("13572468")) == 0x9000


@pytest.mark.parametrize(
    "new_block",
    [
        "31 32 33 34 35 FF FF FF",  # five digits
        "31 32 33 FF 34 35 36 FF",  # padding in the middle
        "31 32 61 34 35 36 FF FF",  # a letter
    ],
)
def test_change_pin_refuses_a_malformed_new_pin_without_using_a_try(new_block: str) -> None:
    card = Card()
    assert card.sw(h("00 24 00 80 10") + block("246810") + h(new_block)) == 0x6A80
    assert card.sw(STATUS) == 0x63C3
    assert card.sw(RIGHT) == 0x9000


def test_puk_unblocks_the_pin_and_wrong_puks_count_down() -> None:
    card = Card()
    for _ in range(3):
        card.sw(WRONG)
    assert card.sw(RIGHT) == 0x6983
    assert card.sw(h("00 2C 00 80 10") + block("99999999") + block("112233")) == 0x63C2
    assert card.saved[-1].puk_retries_left == 2
    assert card.sw(h("00 2C 00 80 10") + block("13579135") + block("112233")) == 0x9000
    last = card.saved[-1]
    assert (last.pin, last.pin_retries_left, last.puk_retries_left) == ("112233", 3, 3)
    assert card.sw(pin_apdu("112233")) == 0x9000


def test_change_puk_and_blocked_puk() -> None:
    card = Card()
    assert card.sw(h("00 24 00 81 10") + block("13579135") + block("24682468")) == 0x9000
    assert card.saved[-1].puk == "24682468"
    reset = h("00 2C 00 80 10") + block("13579135") + block("112233")
    assert [card.sw(reset) for _ in range(4)] == [0x63C2, 0x63C1, 0x63C0, 0x6983]


def test_apdu_log_redacts_pin_bodies() -> None:
    card = Card()
    card.sw(RIGHT)
    card.sw(h("00 24 00 80 10") + block("246810") + block("13572468"))
    card.sw(h("00 2C 00 80 10") + block("13579135") + block("112233"))
    commands = [e for e in card.log if e.direction is Direction.COMMAND]
    assert [e.data for e in commands[1:]] == [
        h("00 20 00 80"),
        h("00 24 00 80"),
        h("00 2C 00 80"),
    ]
    assert [e.redacted for e in commands[1:]] == [9, 17, 17]
    text = "\n".join(e.render() for e in card.log)
    for secret in ("32 34 36 38 31 30", "31 33 35 37 39", "31 31 32 32 33 33"):
        assert secret not in text
    assert "> 00 20 00 80 [9 bytes redacted]" in text
    assert "< 90 00" in text
    assert all(e.time == 1700000000.0 for e in card.log)
    # Everything else is logged whole.
    assert commands[0].data == SELECT and commands[0].redacted == 0


def test_a_fault_while_persisting_counters_answers_6f00(caplog: pytest.LogCaptureFixture) -> None:
    def full_disk(profile: CardProfile) -> None:
        raise OSError("No space left on device")

    applet = PivApplet(make_test_profile(KeyAlgorithm.P256), on_counters_changed=full_disk)
    conn = InProcessConnection(applet)
    assert conn.transmit(SELECT)[1] == 0x9000
    with caplog.at_level(logging.ERROR):
        assert conn.transmit(WRONG) == (b"", 0x6F00)
    assert "virtual card fault" in caplog.text
    assert conn.transmit(h("00 CB 3F FF 03 5C 01 7E 00"))[1] == 0x9000


def test_a_failing_apdu_log_does_not_stop_the_card(caplog: pytest.LogCaptureFixture) -> None:
    def broken_log(entry: ApduLogEntry) -> None:
        raise OSError("No space left on device")

    conn = InProcessConnection(PivApplet(make_test_profile(KeyAlgorithm.P256), apdu_log=broken_log))
    with caplog.at_level(logging.ERROR):
        assert conn.transmit(SELECT)[1] == 0x9000
    assert "could not write the APDU log" in caplog.text
