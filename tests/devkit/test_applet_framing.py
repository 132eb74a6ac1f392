"""The virtual PIV applet on hex vectors: SELECT, GET DATA, response chaining, framing."""

from __future__ import annotations

import pytest
from cardsim_profiles import exchange_all, h, new_card
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.cardsim import PIV_ATR, InProcessConnection

SELECT_ANSWER = h("61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08")
DISCOVERY_ANSWER = h("7E 12 4F 0B A0 00 00 03 08 00 00 10 00 01 00 5F 2F 02 40 00")
SELECT_PIV = h("00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00")
GET_CERT = "00 CB 3F FF 05 5C 03 5F C1 05"


def selected(algorithm: KeyAlgorithm = KeyAlgorithm.P256) -> InProcessConnection:
    card = new_card(algorithm)
    assert card.transmit(SELECT_PIV) == (SELECT_ANSWER, 0x9000)
    return card


def cert_der(card: InProcessConnection) -> bytes:
    pem = card.applet.profile.certificate_pem.encode()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_atr_is_a_generic_t1_piv_atr() -> None:
    assert PIV_ATR == h("3B 81 01 80 00")
    # TD1 = 01: protocol T=1; TCK makes the XOR of T0..TCK zero.
    checksum = 0
    for byte in PIV_ATR[1:]:
        checksum ^= byte
    assert checksum == 0
    assert new_card().atr == PIV_ATR


@pytest.mark.parametrize(
    "apdu",
    [
        "00 A4 04 00 05 A0 00 00 03 08",  # yubikit: the RID alone, no Le
        "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00",  # OpenSC: 9 bytes, Le 00
        "00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00 00",  # the full AID
    ],
)
def test_select_by_any_aid_prefix_answers_the_property_template(apdu: str) -> None:
    card = new_card()
    assert card.transmit(h(apdu)) == (SELECT_ANSWER, 0x9000)


@pytest.mark.parametrize(
    "apdu",
    [
        "00 A4 04 00 07 A0 00 00 00 03 10 10 00",  # a payment application
        "00 A4 04 00 04 A0 00 00 03 00",  # shorter than the RID
        "00 A4 04 00 0C A0 00 00 03 08 00 00 10 00 01 00 01 00",  # longer than the AID
        "00 A4 04 00 06 A0 00 00 03 08 01 00",  # right RID, wrong PIX
    ],
)
def test_select_of_another_aid_is_file_not_found(apdu: str) -> None:
    assert new_card().transmit(h(apdu)) == (b"", 0x6A82)


def test_failed_select_keeps_piv_selected() -> None:
    card = selected()
    assert card.transmit(h("00 A4 04 00 05 D2 76 00 01 24 00")) == (b"", 0x6A82)
    assert card.transmit(h("00 CB 3F FF 03 5C 01 7E 00")) == (DISCOVERY_ANSWER, 0x9000)


def test_nothing_but_select_before_piv_is_selected() -> None:
    card = new_card()
    assert card.transmit(h("00 CB 3F FF 03 5C 01 7E 00")) == (b"", 0x6D00)
    assert card.transmit(h("00 20 00 80 00")) == (b"", 0x6D00)


def test_discovery_object_is_bare_7e() -> None:
    assert selected().transmit(h("00 CB 3F FF 03 5C 01 7E 00")) == (DISCOVERY_ANSWER, 0x9000)


def test_certificate_read_first_8_bytes_then_whole_through_get_response() -> None:
    card = selected(KeyAlgorithm.RSA2048)
    der = cert_der(card)
    assert 800 < len(der) < 1100
    inner = h("70 82") + len(der).to_bytes(2, "big") + der + h("71 01 00 FE 00")
    expected = h("53 82") + len(inner).to_bytes(2, "big") + inner

    # OpenSC 0.23 first asks for 8 bytes to learn the length.
    head, sw = card.transmit(h(GET_CERT + " 08"))
    assert head == expected[:8]
    assert sw == 0x6100  # more than 256 bytes remain

    data, sw = card.transmit(h(GET_CERT + " 00"))
    assert (len(data), sw) == (256, 0x6100)
    pieces = [data]
    while sw >> 8 == 0x61:
        data, sw = card.transmit(h("00 C0 00 00") + bytes([sw & 0xFF]))
        pieces.append(data)
    assert sw == 0x9000
    assert [len(p) for p in pieces[:-1]] == [256] * (len(pieces) - 1)
    assert b"".join(pieces) == expected
    assert len(pieces) == -(-len(expected) // 256)


def test_get_response_may_ask_for_less_than_announced() -> None:
    card = selected(KeyAlgorithm.RSA2048)
    first, sw = card.transmit(h(GET_CERT + " 00"))
    part, sw2 = card.transmit(h("00 C0 00 00 10"))
    assert (len(part), sw2 >> 8) == (16, 0x61)
    rest, sw3 = exchange_all(card, h("00 C0 00 00 00"))
    assert sw3 == 0x9000
    whole, _ = exchange_all(card, h(GET_CERT + " 00"))
    assert first + part + rest == whole


def test_missing_le_reads_as_256_and_extended_le_gets_everything() -> None:
    card = selected(KeyAlgorithm.RSA2048)
    data, sw = card.transmit(h(GET_CERT))  # case 3: no Le
    assert (len(data), sw) == (256, 0x6100)
    whole, _ = exchange_all(card, h(GET_CERT + " 00"))
    extended = h("00 CB 3F FF 00 00 05 5C 03 5F C1 05 00 00")  # Lc 0005, Le 0000 = 65536
    assert card.transmit(extended) == (whole, 0x9000)


def test_chuid_and_ccc_objects() -> None:
    card = selected()
    profile = card.applet.profile
    chuid = bytes.fromhex(profile.chuid_hex)
    assert card.transmit(h("00 CB 3F FF 05 5C 03 5F C1 02 00")) == (
        h("53") + bytes([len(chuid)]) + chuid,
        0x9000,
    )
    guid = bytes.fromhex(profile.card_guid_hex)
    # Card identifier F0: GSC-RID, manufacturer FF, card type 00, card id (GUID prefix).
    ccc = (
        h("53 33 F0 15 A0 00 00 01 16 FF 00")
        + guid[:14]
        + h("F1 01 21 F2 01 21 F3 00 F4 01 00 F5 01 10 F6 00 F7 00 FA 00 FB 00 FC 00 FD 00 FE 00")
    )
    assert card.transmit(h("00 CB 3F FF 05 5C 03 5F C1 07 00")) == (ccc, 0x9000)


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00 CB 3F FF 05 5C 03 5F C1 0C 00", 0x6A82),  # key history: absent
        ("00 CB 3F FF 05 5C 03 5F C1 0A 00", 0x6A82),  # signature certificate: absent
        ("00 CB 3F FE 05 5C 03 5F C1 05 00", 0x6A86),  # P1-P2 must be 3FFF
        ("00 CB 3F FF 05 5D 03 5F C1 05 00", 0x6A80),  # not a tag list
        ("00 CB 3F FF 04 5C 02 5F C1 00", 0x6A80),  # two-byte tag
        ("00 CB 3F FF 05 5C 05 5F C1 05 00", 0x6A80),  # TLV runs past the end
    ],
)
def test_get_data_errors(apdu: str, sw: int) -> None:
    assert selected().transmit(h(apdu)) == (b"", sw)


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("80 CB 3F FF 03 5C 01 7E 00", 0x6E00),  # proprietary class
        ("0C CB 3F FF 03 5C 01 7E 00", 0x6E00),  # secure messaging
        ("01 CB 3F FF 03 5C 01 7E 00", 0x6E00),  # logical channel 1
        ("00 FD 00 00 00", 0x6D00),  # YubiKey GET VERSION: not this card
        ("00 CA 00 7E 00", 0x6D00),  # ISO GET DATA (odd/even INS confusion)
        ("00 CB 3F", 0x6700),  # not even a header
        ("00 CB 3F FF 05 5C 01 7E", 0x6700),  # Lc says 5, 3 bytes follow
        ("00 CB 3F FF 00 00", 0x6700),  # two-byte body
        ("00 C0 00 00 00", 0x6985),  # GET RESPONSE with nothing pending
        ("00 C0 01 00 00", 0x6A86),
        ("00 A4 00 00 02 3F 00", 0x6A82),  # select by file id: no file system
        ("00 A4 04 01 05 A0 00 00 03 08", 0x6A86),
        ("00 A4 04 0C 05 D2 76 00 01 24", 0x6A82),  # another AID, whatever P2 says
        ("00 A4 04 0C 05 A0 00 00 03 08", 0x9000),  # PIV, no response data asked for
    ],
)
def test_framing_status_words(apdu: str, sw: int) -> None:
    assert selected().transmit(h(apdu)) == (b"", sw)


def test_a_new_command_discards_unread_response_data() -> None:
    card = selected(KeyAlgorithm.RSA2048)
    assert card.transmit(h(GET_CERT + " 00"))[1] == 0x6100
    assert card.transmit(h("00 CB 3F FF 03 5C 01 7E 00")) == (DISCOVERY_ANSWER, 0x9000)
    assert card.transmit(h("00 C0 00 00 00")) == (b"", 0x6985)


def test_reset_deselects_and_drops_pending_data() -> None:
    card = selected(KeyAlgorithm.RSA2048)
    assert card.transmit(h(GET_CERT + " 00"))[1] == 0x6100
    card.reset()
    assert card.transmit(h("00 C0 00 00 00")) == (b"", 0x6985)
    assert card.transmit(h("00 CB 3F FF 03 5C 01 7E 00")) == (b"", 0x6D00)


def test_in_process_connection_counts_apdus_and_bytes() -> None:
    card = new_card()
    card.transmit(SELECT_PIV)
    card.transmit(h("00 CB 3F FF 03 5C 01 7E 00"))
    counters = card.counters
    assert counters.commands == 2
    assert counters.command_bytes == len(SELECT_PIV) + 9
    assert counters.response_bytes == len(SELECT_ANSWER) + 2 + len(DISCOVERY_ANSWER) + 2
