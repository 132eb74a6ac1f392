"""The Card Holder Unique Identifier (SP 800-73-4 Part 1 §3.1.2) and its FASC-N.

The FASC-N (TIG SCEPACS v2.3 §6) is 40 five-bit characters packed into 25 bytes: each
character is a BCD digit written least significant bit first, then an odd-parity bit;
field separators (FS), start (SS) and end (ES) sentinels frame the fields, and a
longitudinal redundancy character (the XOR of all others) closes it. Agency code 9999
marks a non-federal issuer (the encoding then starts D4 E7 39), and OpenSC takes the card
serial from the GUID. The defaults are those of the widely used non-federal FASC-N
D4E739DA739CED39CE739D836858210842108421C84210C3EB, except the credential number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import IntEnum, unique

from careid_protocol import tlv

FASCN_LENGTH = 25
GUID_LENGTH = 16

_SS = 0xB
_FS = 0xD
_ES = 0xF

#: Digits per field, in order; FS follows each of the first five fields.
_FIELD_WIDTHS = (4, 4, 6, 1, 1, 10, 1, 4, 1)
_FS_AFTER = 5


@unique
class ChuidTag(IntEnum):
    """Tags inside the CHUID object (SP 800-73-4 Part 1 Table 9)."""

    FASCN = 0x30
    ORGANIZATIONAL_IDENTIFIER = 0x32
    DUNS = 0x33
    GUID = 0x34
    EXPIRATION_DATE = 0x35
    CARDHOLDER_UUID = 0x36
    ISSUER_SIGNATURE = 0x3E
    ERROR_DETECTION_CODE = 0xFE


class ChuidError(ValueError):
    """The bytes are not a well-formed CHUID or FASC-N."""


@dataclass(frozen=True, kw_only=True)
class Fascn:
    """The FASC-N's fields, as digit strings."""

    agency_code: str = "9999"
    system_code: str = "9999"
    credential_number: str = "000000"
    credential_series: str = "0"
    individual_credential_issue: str = "1"
    person_identifier: str = "0000000000"
    organizational_category: str = "3"
    organizational_identifier: str = "0000"
    person_association: str = "1"

    def fields(self) -> tuple[str, ...]:
        """The fields in wire order."""
        return (
            self.agency_code,
            self.system_code,
            self.credential_number,
            self.credential_series,
            self.individual_credential_issue,
            self.person_identifier,
            self.organizational_category,
            self.organizational_identifier,
            self.person_association,
        )

    def encode(self) -> bytes:
        """The 25-byte packed encoding."""
        chars = [_SS]
        for index, (value, width) in enumerate(zip(self.fields(), _FIELD_WIDTHS, strict=True)):
            if len(value) != width or not value.isascii() or not value.isdigit():
                raise ChuidError(f"FASC-N field {index} must be {width} digits")
            chars.extend(int(digit) for digit in value)
            if index < _FS_AFTER:
                chars.append(_FS)
        chars.append(_ES)
        lrc = 0
        for char in chars:
            lrc ^= char
        chars.append(lrc)
        bits = 0
        for char in chars:
            bits = (bits << 5) | _char_bits(char)
        return bits.to_bytes(FASCN_LENGTH, "big")

    @classmethod
    def decode(cls, data: bytes) -> Fascn:
        """Parse a packed FASC-N, checking parity, framing and the LRC."""
        if len(data) != FASCN_LENGTH:
            raise ChuidError(f"a FASC-N is {FASCN_LENGTH} bytes, not {len(data)}")
        bits = int.from_bytes(data, "big")
        chars = [_char_value((bits >> (5 * (39 - i))) & 0x1F) for i in range(40)]
        lrc = 0
        for char in chars[:-1]:
            lrc ^= char
        if chars[-1] != lrc:
            raise ChuidError("FASC-N LRC mismatch")
        if chars[0] != _SS or chars[-2] != _ES:
            raise ChuidError("FASC-N sentinels missing")
        pos = 1
        values: list[str] = []
        for index, width in enumerate(_FIELD_WIDTHS):
            digits = chars[pos : pos + width]
            if any(d > 9 for d in digits):
                raise ChuidError(f"FASC-N field {index} holds a non-digit")
            values.append("".join(str(d) for d in digits))
            pos += width
            if index < _FS_AFTER:
                if chars[pos] != _FS:
                    raise ChuidError(f"FASC-N field separator missing after field {index}")
                pos += 1
        return cls(
            agency_code=values[0],
            system_code=values[1],
            credential_number=values[2],
            credential_series=values[3],
            individual_credential_issue=values[4],
            person_identifier=values[5],
            organizational_category=values[6],
            organizational_identifier=values[7],
            person_association=values[8],
        )


def _char_bits(value: int) -> int:
    # Bits b1..b4 go out least significant first; the fifth makes the count of ones odd.
    reversed_bits = int(f"{value:04b}"[::-1], 2)
    parity = 0 if bin(value).count("1") % 2 else 1
    return (reversed_bits << 1) | parity


def _char_value(bits: int) -> int:
    if bin(bits).count("1") % 2 != 1:
        raise ChuidError("FASC-N character fails its parity check")
    return int(f"{bits >> 1:04b}"[::-1], 2)


@dataclass(frozen=True, kw_only=True)
class Chuid:
    """A CHUID with the mandatory fields (the issuer signature left empty: demo cards)."""

    fascn: bytes
    guid: bytes
    expiration: date
    issuer_signature: bytes = b""

    def encode(self) -> bytes:
        """The bytes inside the data object's tag 53."""
        if len(self.fascn) != FASCN_LENGTH or len(self.guid) != GUID_LENGTH:
            raise ChuidError("FASC-N must be 25 bytes and GUID 16")
        return b"".join(
            (
                tlv.encode(ChuidTag.FASCN, self.fascn),
                tlv.encode(ChuidTag.GUID, self.guid),
                tlv.encode(ChuidTag.EXPIRATION_DATE, self.expiration.strftime("%Y%m%d").encode()),
                tlv.encode(ChuidTag.ISSUER_SIGNATURE, self.issuer_signature),
                tlv.encode(ChuidTag.ERROR_DETECTION_CODE, b""),
            )
        )

    @classmethod
    def decode(cls, value: bytes) -> Chuid:
        """Parse the bytes inside tag 53; optional tags (32, 33, 36) are skipped."""
        try:
            items = {item.tag: item.value for item in tlv.parse(value)}
        except tlv.TlvError as exc:
            raise ChuidError(str(exc)) from exc
        for tag in (ChuidTag.FASCN, ChuidTag.GUID, ChuidTag.EXPIRATION_DATE):
            if tag not in items:
                raise ChuidError(f"CHUID lacks tag {tag:02X}")
        if ChuidTag.ISSUER_SIGNATURE not in items:
            raise ChuidError("CHUID lacks the issuer signature tag 3E")
        try:
            expiration = datetime.strptime(
                items[ChuidTag.EXPIRATION_DATE].decode("ascii"), "%Y%m%d"
            ).date()
        except (UnicodeDecodeError, ValueError) as exc:
            raise ChuidError("CHUID expiration date is not YYYYMMDD") from exc
        chuid = cls(
            fascn=items[ChuidTag.FASCN],
            guid=items[ChuidTag.GUID],
            expiration=expiration,
            issuer_signature=items[ChuidTag.ISSUER_SIGNATURE],
        )
        if len(chuid.fascn) != FASCN_LENGTH or len(chuid.guid) != GUID_LENGTH:
            raise ChuidError("FASC-N must be 25 bytes and GUID 16")
        return chuid
