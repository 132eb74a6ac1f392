"""Command APDU parsing, traffic counters and the redacted APDU log (ISO/IEC 7816-3/-4).

The card side of the wire: a command arrives as raw bytes and must be taken apart
exactly as a real card would, short and extended forms alike, without ever crashing
on a malformed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from careid_protocol.piv import Ins


class ApduFormatError(ValueError):
    """The bytes are not a well-formed command APDU (the card answers 6700)."""


@dataclass(frozen=True, kw_only=True)
class CommandApdu:
    """One parsed command. `le` is None when absent; 256 / 65536 encode as 00 / 0000."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    @property
    def chained(self) -> bool:
        """Whether more blocks of this command follow (ISO/IEC 7816-4 §5.4.1, CLA b5)."""
        return bool(self.cla & 0x10)

    @property
    def p1p2(self) -> int:
        """P1 and P2 as one 16-bit number."""
        return (self.p1 << 8) | self.p2


def parse_command(raw: bytes) -> CommandApdu:
    """Split a command APDU into header, body and Le (cases 1-4, short and extended)."""
    if len(raw) < 4:
        raise ApduFormatError("a command APDU has at least four header bytes")
    cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
    body = raw[4:]
    data = b""
    le: int | None = None
    if len(body) == 1:  # case 2 short
        le = body[0] or 256
    elif len(body) > 1 and body[0] != 0:  # cases 3 and 4 short
        lc = body[0]
        if len(body) == 1 + lc:
            data = body[1:]
        elif len(body) == 2 + lc:
            data, le = body[1:-1], body[-1] or 256
        else:
            raise ApduFormatError("Lc does not match the body length")
    elif len(body) == 3:  # case 2 extended: 00 Le1 Le2
        le = int.from_bytes(body[1:3], "big") or 65536
    elif len(body) > 3:  # cases 3 and 4 extended: 00 Lc1 Lc2 data [Le1 Le2]
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of zero")
        if len(body) == 3 + lc:
            data = body[3:]
        elif len(body) == 5 + lc:
            data, le = body[3:-2], int.from_bytes(body[-2:], "big") or 65536
        else:
            raise ApduFormatError("extended Lc does not match the body length")
    elif body:
        raise ApduFormatError("a two-byte body is neither short nor extended")
    return CommandApdu(cla=cla, ins=ins, p1=p1, p2=p2, data=bytes(data), le=le)


#: Instructions whose command body carries a PIN or PUK (never logged).
SECRET_INS = frozenset({Ins.VERIFY, Ins.CHANGE_REFERENCE_DATA, Ins.RESET_RETRY_COUNTER})


class Direction(StrEnum):
    """Which way an APDU travelled, from the card's point of view."""

    COMMAND = "command"
    RESPONSE = "response"


@dataclass(frozen=True, kw_only=True)
class ApduLogEntry:
    """One logged APDU. For PIN-bearing commands `data` keeps only the 4-byte header."""

    direction: Direction
    data: bytes
    time: float
    """Seconds since the epoch when the APDU passed through the card."""
    redacted: int = 0
    """How many bytes after the header were withheld from the log."""

    def render(self) -> str:
        """One line for a trace file, e.g. `> 00 20 00 80 [5 bytes redacted]`."""
        arrow = ">" if self.direction is Direction.COMMAND else "<"
        text = f"{arrow} {self.data.hex(' ').upper()}"
        if self.redacted:
            text += f" [{self.redacted} bytes redacted]"
        return text


def log_entry(direction: Direction, raw: bytes, time: float) -> ApduLogEntry:
    """A log entry for `raw`, with the body of a PIN-bearing command withheld."""
    if direction is Direction.COMMAND and len(raw) > 4 and raw[1] in SECRET_INS:
        return ApduLogEntry(direction=direction, data=raw[:4], time=time, redacted=len(raw) - 4)
    return ApduLogEntry(direction=direction, data=bytes(raw), time=time)


@dataclass(frozen=True, kw_only=True)
class ApduCounters:
    """Traffic through one card connection: commands and the bytes each way."""

    commands: int = 0
    command_bytes: int = 0
    response_bytes: int = 0

    def add(self, command: bytes, response: bytes) -> ApduCounters:
        """The counters after one more exchange."""
        return ApduCounters(
            commands=self.commands + 1,
            command_bytes=self.command_bytes + len(command),
            response_bytes=self.response_bytes + len(response),
        )
