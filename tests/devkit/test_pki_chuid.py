"""The CHUID (SP 800-73-4 Part 1 §3.1.2) and FASC-N the development PKI writes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from pki_fixtures import NOW, PIN, card_cert

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.pki import Chuid, ChuidError, Fascn, init_pki
from careid_protocol import tlv

#: The non-federal FASC-N widely used by PIV-compatible (PIV-I style) issuers: agency and
#: system code 9999, credential 999999, CS 0, ICI 1, PI 0000000000, OC 3, OI 0000, POA 1.
KNOWN_FASCN = bytes.fromhex("D4E739DA739CED39CE739D836858210842108421C84210C3EB")


def test_known_fascn_decodes_to_its_fields() -> None:
    fascn = Fascn.decode(KNOWN_FASCN)
    assert fascn == Fascn(
        agency_code="9999",
        system_code="9999",
        credential_number="999999",
        credential_series="0",
        individual_credential_issue="1",
        person_identifier="0000000000",
        organizational_category="3",
        organizational_identifier="0000",
        person_association="1",
    )
    assert fascn.encode() == KNOWN_FASCN


def test_fascn_of_agency_9999_starts_d4e739_as_opensc_expects() -> None:
    encoded = Fascn(credential_number="123456").encode()
    assert len(encoded) == 25
    assert encoded[:3] == bytes.fromhex("D4E739")
    assert encoded[3] & 0x80  # OpenSC checks the first bit of the fourth byte too
    assert Fascn.decode(encoded).credential_number == "123456"


def _digits(width: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=width, max_size=width)


@given(
    st.builds(
        Fascn,
        agency_code=_digits(4),
        system_code=_digits(4),
        credential_number=_digits(6),
        credential_series=_digits(1),
        individual_credential_issue=_digits(1),
        person_identifier=_digits(10),
        organizational_category=_digits(1),
        organizational_identifier=_digits(4),
        person_association=_digits(1),
    )
)
def test_any_fascn_round_trips(fascn: Fascn) -> None:
    encoded = fascn.encode()
    assert len(encoded) == 25
    assert Fascn.decode(encoded) == fascn


@given(st.binary(min_size=25, max_size=25))
def test_fascn_decoder_never_crashes_on_noise(data: bytes) -> None:
    try:
        Fascn.decode(data)
    except ChuidError:
        pass


@given(st.binary(max_size=80))
def test_chuid_decoder_never_crashes_on_noise(data: bytes) -> None:
    try:
        Chuid.decode(data)
    except ChuidError:
        pass


@pytest.mark.parametrize("bit", [0, 7, 100, 199])
def test_fascn_single_bit_errors_are_detected(bit: int) -> None:
    damaged = bytearray(KNOWN_FASCN)
    damaged[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(ChuidError):
        Fascn.decode(bytes(damaged))


def test_fascn_fields_must_be_digits_of_the_right_width() -> None:
    with pytest.raises(ChuidError):
        Fascn(credential_number="12345").encode()
    with pytest.raises(ChuidError):
        Fascn(agency_code="99A9").encode()
    with pytest.raises(ChuidError):
        Fascn.decode(KNOWN_FASCN[:24])


def test_chuid_encoding_matches_a_hand_built_vector() -> None:
    guid = bytes(range(16))
    chuid = Chuid(fascn=KNOWN_FASCN, guid=guid, expiration=date(2030, 1, 2))
    expected = (
        "3019"
        + KNOWN_FASCN.hex()
        + "3410"
        + "000102030405060708090A0B0C0D0E0F"
        + "3508"
        + "3230333030313032"  # "20300102"
        + "3E00"
        + "FE00"
    )
    assert chuid.encode() == bytes.fromhex(expected)
    assert Chuid.decode(bytes.fromhex(expected)) == chuid


def test_chuid_decode_skips_optional_tags_and_refuses_missing_ones() -> None:
    guid = bytes(16)
    value = Chuid(fascn=KNOWN_FASCN, guid=guid, expiration=date(2031, 5, 6)).encode()
    with_duns = tlv.encode(0x33, b"123456789") + value
    assert Chuid.decode(with_duns).guid == guid
    without_guid = b"".join(
        tlv.encode(item.tag, item.value) for item in tlv.parse(value) if item.tag != 0x34
    )
    with pytest.raises(ChuidError):
        Chuid.decode(without_guid)
    with pytest.raises(ChuidError):
        Chuid.decode(value[:-3])  # truncated TLV


def test_issued_card_chuid_structure(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki", now=NOW)
    profile = pki.issue_card(
        uuid="555000000001", name="Alex Morgan", algorithm=KeyAlgorithm.P256, pin=PIN, now=NOW
    )
    value = bytes.fromhex(profile.chuid_hex)
    items = tlv.parse(value)
    assert [(item.tag, len(item.value)) for item in items] == [
        (0x30, 25),
        (0x34, 16),
        (0x35, 8),
        (0x3E, 0),
        (0xFE, 0),
    ]
    fascn, guid, expiry = items[0].value, items[1].value, items[2].value
    assert fascn[:3] == bytes.fromhex("D4E739")
    decoded = Fascn.decode(fascn)
    assert (decoded.agency_code, decoded.system_code) == ("9999", "9999")
    assert guid == bytes.fromhex(profile.card_guid_hex)
    cert = card_cert(profile)
    assert expiry == cert.not_valid_after_utc.strftime("%Y%m%d").encode()
    # The card GUID in the CHUID is the card UUID named in the certificate's SAN.
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (urn,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert urn.replace("-", "").upper().endswith(profile.card_guid_hex)
    # Two cards never share a GUID or a credential number.
    again = pki.issue_card(
        uuid="555000000001", name="Alex Morgan", algorithm=KeyAlgorithm.P256, pin=PIN, now=NOW
    )
    assert again.card_guid_hex != profile.card_guid_hex
    assert again.chuid_hex != profile.chuid_hex
