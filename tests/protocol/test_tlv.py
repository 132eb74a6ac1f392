from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careid_protocol import tlv


def test_certificate_object_with_long_form_lengths() -> None:
    # 53 82 01 09 { 70 82 01 00 <256 bytes> 71 01 00 FE 00 }: the shape of a PIV
    # certificate object (SP 800-73-4 Part 1 Table 10).
    cert = bytes(range(256))
    inner = tlv.encode(0x70, cert) + tlv.encode(0x71, b"\x00") + tlv.encode(0xFE, b"")
    data = tlv.encode(0x53, inner)
    assert data[:4] == bytes.fromhex("53820109")
    body = tlv.parse_single(data, 0x53)
    assert tlv.find(body, 0x70) == cert
    assert tlv.find(body, 0x71) == b"\x00"
    assert tlv.find(body, 0xFE) == b""
    assert tlv.find(body, 0x99) is None


def test_three_byte_tags() -> None:
    items = tlv.parse(bytes.fromhex("5C035FC1055FC10200"))
    assert items[0].tag == 0x5C and items[0].value == bytes.fromhex("5FC105")
    assert items[1].tag == 0x5FC102 and items[1].value == b""


@pytest.mark.parametrize(
    "hexdata",
    [
        "53",  # no length
        "5305AABB",  # value runs past the end
        "5F",  # truncated multi-byte tag
        "5FC1",  # truncated three-byte tag
        "5FC1C1C101",  # four-byte tag
        "5384FFFFFFFF",  # length form PIV never uses
        "5380",  # indefinite length
        "538201",  # truncated long length
    ],
)
def test_malformed_input_raises_tlv_error(hexdata: str) -> None:
    with pytest.raises(tlv.TlvError):
        tlv.parse(bytes.fromhex(hexdata))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x53, 0x70, 0x71, 0x7E, 0x5FC105, 0x5F2F, 0xFE]),
            st.binary(max_size=600),
        ),
        max_size=5,
    )
)
def test_encode_parse_round_trip(elements: list[tuple[int, bytes]]) -> None:
    data = b"".join(tlv.encode(tag, value) for tag, value in elements)
    assert [(i.tag, i.value) for i in tlv.parse(data)] == elements


@given(st.binary(max_size=64))
def test_parse_never_crashes_on_garbage(data: bytes) -> None:
    try:
        tlv.parse(data)
    except tlv.TlvError:
        pass
