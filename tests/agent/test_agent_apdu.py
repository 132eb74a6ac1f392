"""APDU encoding, command and response chaining, status words and the redacted trace."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from agent_fakes import ScriptedConnection, h

from careid_agent.apdu import (
    MAX_GET_RESPONSE_ROUNDS,
    TRACE,
    ApduProtocol,
    describe_command,
    encode_command,
    error_for_status,
)
from careid_agent.errors import (
    ApduError,
    CardCommunicationError,
    PinBlockedError,
    SecurityStatusError,
    WrongPinError,
)
from careid_protocol.errors import ErrorCode


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0x00, 0x20, 0x00, 0x80), "00 20 00 80"),  # case 1
        ((0x00, 0xC0, 0x00, 0x00, b"", 0x1C), "00 C0 00 00 1C"),  # case 2
        ((0x00, 0xC0, 0x00, 0x00, b"", 256), "00 C0 00 00 00"),  # Le 256 is 00
        ((0x00, 0xA4, 0x04, 0x00, h("A0 00 00 03 08")), "00 A4 04 00 05 A0 00 00 03 08"),
        (
            (0x00, 0xCB, 0x3F, 0xFF, h("5C 03 5F C1 05"), 256),
            "00 CB 3F FF 05 5C 03 5F C1 05 00",
        ),  # case 4
    ],
)
def test_encode_command_cases(args: tuple[Any, ...], expected: str) -> None:
    assert bytes(encode_command(*args)) == h(expected)


@pytest.mark.parametrize(
    "args",
    [(0x100, 0, 0, 0), (0, 0, 0, -1), (0, 0, 0, 0, bytes(256)), (0, 0, 0, 0, b"", 257)],
)
def test_encode_command_refuses_what_a_short_apdu_cannot_carry(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        encode_command(*args)


def test_response_chaining_accumulates_get_response_pieces() -> None:
    # A GET DATA answered in two pieces: 256 bytes + 61 1C, then GET RESPONSE with Le 1C.
    first, rest = bytes(range(256)), bytes(range(0x1C))
    card = ScriptedConnection(
        [
            ("00 CB 3F FF 05 5C 03 5F C1 05 00", first.hex() + "61 1C"),
            ("00 C0 00 00 1C", rest.hex() + "90 00"),
        ]
    )
    data = ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 03 5F C1 05"), le=256)
    assert data == first + rest
    assert card.done()


def test_61_00_asks_for_256_more() -> None:
    card = ScriptedConnection(
        [
            ("00 CB 3F FF 03 5C 01 7E 00", "AA" * 256 + "61 00"),
            ("00 C0 00 00 00", "BB" * 256 + "61 02"),
            ("00 C0 00 00 02", "CC CC 90 00"),
        ]
    )
    data = ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=256)
    assert data == b"\xaa" * 256 + b"\xbb" * 256 + b"\xcc\xcc"


def test_command_chaining_splits_an_rsa_general_authenticate_at_255_bytes() -> None:
    # 7C 82 01 06 { 82 00, 81 82 01 00 <256-byte PKCS#1 block> }: 266 bytes of data.
    block = h("00 01") + b"\xff" * 202 + h("00") + bytes(range(51))
    body = h("7C 82 01 06 82 00 81 82 01 00") + block
    assert len(body) == 266
    signature = bytes(range(256))
    answer = h("7C 82 01 04 82 82 01 00") + signature
    card = ScriptedConnection(
        [
            ("10 87 07 9A FF" + body[:255].hex(), "90 00"),  # CLA 10, no Le
            ("00 87 07 9A 0B" + body[255:].hex() + "00", answer[:256].hex() + "61 08"),
            ("00 C0 00 00 08", answer[256:].hex() + "90 00"),
        ]
    )
    assert ApduProtocol(card).send(0x00, 0x87, 0x07, 0x9A, body, le=256) == answer
    assert card.done()


def test_a_failed_block_ends_the_chain() -> None:
    card = ScriptedConnection([("10 87 07 9A FF" + "00" * 255, "6A 80")])
    response = ApduProtocol(card).exchange(0x00, 0x87, 0x07, 0x9A, bytes(300), le=256)
    assert response.sw == 0x6A80
    assert card.done()


def test_6cxx_resends_with_the_length_the_card_asked_for() -> None:
    card = ScriptedConnection(
        [
            ("00 CB 3F FF 03 5C 01 7E 08", "6C 14"),
            ("00 CB 3F FF 03 5C 01 7E 14", "7E 12" + "00" * 18 + "90 00"),
        ]
    )
    assert ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=8)[:2] == h("7E 12")


def test_6cxx_adds_an_le_to_a_command_that_had_none() -> None:
    card = ScriptedConnection([("00 CA 01 02", "6C 02"), ("00 CA 01 02 02", "AB CD 90 00")])
    assert ApduProtocol(card).send(0x00, 0xCA, 0x01, 0x02) == h("AB CD")


def test_a_card_that_never_stops_answering_61xx_is_cut_off() -> None:
    class Endless:
        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            return bytes(256), 0x6100

    with pytest.raises(CardCommunicationError):
        ApduProtocol(Endless()).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=256)


class Counting:
    """A card answering every command with the same (data, SW), counting commands."""

    def __init__(self, data: bytes, sw: int) -> None:
        self.data, self.sw, self.sent = data, sw, 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent += 1
        return self.data, self.sw


def test_a_get_response_that_brings_no_data_is_refused_at_once() -> None:
    # "61 00" and nothing else: no progress, so no reason to ask again (this looped
    # forever, holding the card lock and the PC/SC transaction).
    card = Counting(b"", 0x6100)
    with pytest.raises(CardCommunicationError):
        ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=256)
    assert card.sent == 2  # the command, one GET RESPONSE


def test_a_61xx_as_the_first_answer_still_fetches_the_data() -> None:
    # T=0-style: the command's own answer carries no data, only "61 xx".
    card = ScriptedConnection(
        [("00 CB 3F FF 03 5C 01 7E 00", "61 02"), ("00 C0 00 00 02", "AB CD 90 00")]
    )
    assert ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=256) == h("AB CD")


def test_get_response_rounds_are_capped_whatever_the_piece_size() -> None:
    # A byte at a time would take 65,536 rounds to reach the size cap.
    card = Counting(b"\x00", 0x6101)
    with pytest.raises(CardCommunicationError):
        ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=256)
    assert card.sent <= 1 + MAX_GET_RESPONSE_ROUNDS


@pytest.mark.parametrize(
    ("sw", "error", "code"),
    [
        (0x63C2, WrongPinError, ErrorCode.WRONG_PIN),
        (0x63C1, WrongPinError, ErrorCode.WRONG_PIN),
        (0x63C0, PinBlockedError, ErrorCode.PIN_BLOCKED),  # the try that used the last retry
        (0x6983, PinBlockedError, ErrorCode.PIN_BLOCKED),
        (0x6982, SecurityStatusError, ErrorCode.CARD_SECURITY_NOT_SATISFIED),
        (0x6A80, ApduError, ErrorCode.CARD_COMMUNICATION),
        (0x6A86, ApduError, ErrorCode.CARD_COMMUNICATION),
        (0x6D00, ApduError, ErrorCode.CARD_COMMUNICATION),
        (0x6F00, ApduError, ErrorCode.CARD_COMMUNICATION),
    ],
)
def test_status_words_map_to_typed_errors(sw: int, error: type, code: ErrorCode) -> None:
    exc = error_for_status(sw)
    assert type(exc) is error
    assert exc.code is code
    if isinstance(exc, WrongPinError):
        assert exc.retries_left == sw & 0x0F
    if isinstance(exc, ApduError):
        assert exc.sw == sw and f"{sw:04X}" in str(exc)


def test_wrong_pin_message_says_how_many_tries_are_left() -> None:
    assert WrongPinError(2).message == (
        "The PIN was not correct. 2 tries left before the card is blocked."
    )
    assert "1 try left" in WrongPinError(1).message


def test_send_raises_the_mapped_error() -> None:
    card = ScriptedConnection([("00 20 00 80 08 31 31 31 31 31 31 FF FF", "63 C2")])
    with pytest.raises(WrongPinError) as caught:
        ApduProtocol(card).send(0x00, 0x20, 0x00, 0x80, h("31 31 31 31 31 31 FF FF"))
    assert caught.value.retries_left == 2


def test_trace_log_redacts_pin_bodies_and_keeps_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    card = ScriptedConnection(
        [
            ("00 20 00 80 08 32 34 36 38 31 30 FF FF", "90 00"),
            ("00 CB 3F FF 03 5C 01 7E 00", "7E 00 90 00"),
        ]
    )
    protocol = ApduProtocol(card)
    with caplog.at_level(TRACE, logger="careid_agent.apdu"):
        protocol.send(0x00, 0x20, 0x00, 0x80, bytearray(b"246810\xff\xff"))
        protocol.send(0x00, 0xCB, 0x3F, 0xFF, h("5C 01 7E"), le=256)
    text = caplog.text
    assert "3234363831" not in text.replace(" ", "") and "246810" not in text
    assert "0020008008 <8 bytes redacted>" in text
    assert "00CB3FFF035C017E00" in text
    assert logging.getLevelName(TRACE) == "TRACE"


@pytest.mark.parametrize("ins", [0x20, 0x24, 0x2C])
def test_describe_command_redacts_every_pin_bearing_instruction(ins: int) -> None:
    apdu = bytes([0x00, ins, 0x00, 0x80, 0x10]) + b"1234567887654321"
    assert "31" not in describe_command(apdu)
    assert describe_command(h("00 20 00 80")) == "00200080"
