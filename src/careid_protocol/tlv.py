"""BER-TLV as PIV uses it (SP 800-73-4 Part 2 §3.3; ISO/IEC 7816-4 §5.2).

Tags are one to three bytes (a first byte with its low five bits set means more tag bytes
follow, each with bit 8 set while more follow); lengths are short form (< 0x80) or long
form `81 xx` / `82 xx xx` / `83 xx xx xx`. Parsing never reads past the buffer and never
crashes on unknown tags: malformed input raises `TlvError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


class TlvError(ValueError):
    """The bytes are not well-formed BER-TLV."""


@dataclass(frozen=True, kw_only=True)
class Tlv:
    """One parsed element: its tag as an integer (e.g. 0x5FC105) and value bytes."""

    tag: int
    value: bytes


def encode_length(length: int) -> bytes:
    """The BER length field for `length` bytes."""
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > 3:
        raise ValueError("length too large for PIV")
    return bytes([0x80 | len(body)]) + body


def encode_tag(tag: int) -> bytes:
    """The tag's bytes (an integer tag like 0x5FC105 is written big-endian)."""
    if tag < 0:
        raise ValueError("negative tag")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode(tag: int, value: bytes) -> bytes:
    """One TLV element."""
    return encode_tag(tag) + encode_length(len(value)) + value


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError("truncated tag")
    first = data[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:
        for _ in range(2):
            if pos >= len(data):
                raise TlvError("truncated multi-byte tag")
            byte = data[pos]
            tag = (tag << 8) | byte
            pos += 1
            if not byte & 0x80:
                break
        else:
            raise TlvError("tag longer than three bytes")
    return tag, pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError("truncated length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 3:
        raise TlvError(f"unsupported length form 0x{first:02X}")
    if pos + count > len(data):
        raise TlvError("truncated long-form length")
    return int.from_bytes(data[pos : pos + count], "big"), pos + count


def iter_tlv(data: bytes) -> Iterator[Tlv]:
    """Each element of a concatenation of TLVs, in order."""
    pos = 0
    while pos < len(data):
        tag, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        end = pos + length
        if end > len(data):
            raise TlvError(f"value of tag 0x{tag:X} runs past the end")
        yield Tlv(tag=tag, value=bytes(data[pos:end]))
        pos = end


def parse(data: bytes) -> list[Tlv]:
    """All elements of a concatenation of TLVs."""
    return list(iter_tlv(data))


def parse_single(data: bytes, tag: int) -> bytes:
    """The value of a buffer that must be exactly one element with `tag`."""
    items = parse(data)
    if len(items) != 1 or items[0].tag != tag:
        raise TlvError(f"expected a single element with tag 0x{tag:X}")
    return items[0].value


def find(data: bytes, tag: int) -> bytes | None:
    """The value of the first element with `tag` at the top level, if any."""
    for item in iter_tlv(data):
        if item.tag == tag:
            return item.value
    return None
