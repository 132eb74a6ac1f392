"""ISO 7816-4 command encoding, chaining and status words: one place for each.

`ApduProtocol` sits on any `ApduTransport` (PC/SC or an in-process card) and gives the PIV
session `send(cla, ins, p1, p2, data, le) -> bytes`: short APDUs, command chaining for
bodies over 255 bytes (ISO 7816-4 §5.1.1.1), response chaining through GET RESPONSE
(61xx) and Le correction (6Cxx), which pcsc-lite leaves to the application on T=1.
Raw APDUs are logged at level TRACE (5) with PIN-bearing bodies redacted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from careid_agent.errors import (
    ApduError,
    CardCommunicationError,
    CardError,
    PinBlockedError,
    SecurityStatusError,
    WrongPinError,
)
from careid_agent.transport import ApduTransport
from careid_protocol.piv import Ins, StatusWord

#: A level below DEBUG for raw card traffic (`careid-agent -vvv`).
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

log = logging.getLogger(__name__)

SW_OK = int(StatusWord.SUCCESS)
SHORT_MAX = 255
CLA_CHAINING = 0x10
#: Commands whose body is a PIN or PUK (SP 800-73-4 Part 2 §3.2): never logged.
SENSITIVE_INS = frozenset(
    {int(Ins.VERIFY), int(Ins.CHANGE_REFERENCE_DATA), int(Ins.RESET_RETRY_COUNTER)}
)
#: A card that keeps answering 61xx must not keep us reading forever: a cap on the
#: bytes, and one on the rounds (a byte a round would take 65,536 to reach the first).
MAX_RESPONSE_BYTES = 64 * 1024
MAX_GET_RESPONSE_ROUNDS = 256


@dataclass(frozen=True, kw_only=True)
class Response:
    """A complete response after chaining: data and the final status word."""

    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        """Whether the status word is 9000."""
        return self.sw == SW_OK


def encode_command(
    cla: int, ins: int, p1: int, p2: int, data: bytes | bytearray = b"", le: int = 0
) -> bytearray:
    """A short command APDU; `le` 0 means no Le field, 256 is encoded as 00.

    Returns a bytearray so a caller sending a PIN can wipe it afterwards.
    """
    for name, value in (("cla", cla), ("ins", ins), ("p1", p1), ("p2", p2)):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} out of range: {value}")
    if len(data) > SHORT_MAX:
        raise ValueError("data longer than 255 bytes needs command chaining")
    if not 0 <= le <= 256:
        raise ValueError(f"le out of range: {le}")
    apdu = bytearray((cla, ins, p1, p2))
    if data:
        apdu.append(len(data))
        apdu += data
    if le:
        apdu.append(le & 0xFF)
    return apdu


def describe_command(apdu: bytes | bytearray) -> str:
    """Hex for logs, with the body of VERIFY / CHANGE REFERENCE DATA / RESET RETRY COUNTER
    replaced by its length."""
    if len(apdu) > 5 and apdu[1] in SENSITIVE_INS:
        return f"{bytes(apdu[:5]).hex().upper()} <{len(apdu) - 5} bytes redacted>"
    return bytes(apdu).hex().upper()


def error_for_status(sw: int) -> CardError:
    """The typed error for a status word other than 9000 (SP 800-73-4 Part 2 Table 6)."""
    if sw == StatusWord.AUTH_METHOD_BLOCKED:
        return PinBlockedError()
    if sw & 0xFFF0 == StatusWord.VERIFY_FAIL:
        retries = sw & 0x0F
        # 63C0 answers the try that used the last retry: the PIN is now blocked.
        return PinBlockedError() if retries == 0 else WrongPinError(retries)
    if sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED:
        return SecurityStatusError()
    return ApduError(sw)


class ApduProtocol:
    """Chaining and status words over one connection."""

    def __init__(self, connection: ApduTransport) -> None:
        self.connection = connection

    def transmit(self, apdu: bytes | bytearray) -> tuple[bytes, int]:
        """One raw exchange, traced."""
        if log.isEnabledFor(TRACE):
            log.log(TRACE, "> %s", describe_command(apdu))
        data, sw = self.connection.transmit(bytes(apdu))
        if log.isEnabledFor(TRACE):
            log.log(TRACE, "< %s %04X", data.hex().upper(), sw)
        return data, sw

    def _exchange_one(self, apdu: bytearray) -> tuple[bytes, int]:
        try:
            data, sw = self.transmit(apdu)
            if sw >> 8 == 0x6C:
                # Wrong Le: the card says how many bytes it has; ask again once with that.
                if len(apdu) == 4 or (len(apdu) > 5 and len(apdu) == 5 + apdu[4]):
                    apdu.append(sw & 0xFF)
                else:
                    apdu[-1] = sw & 0xFF
                data, sw = self.transmit(apdu)
            return data, sw
        finally:
            if apdu[1] in SENSITIVE_INS:
                apdu[:] = bytes(len(apdu))

    def exchange(
        self, cla: int, ins: int, p1: int, p2: int, data: bytes | bytearray = b"", le: int = 0
    ) -> Response:
        """Send a command of any length and collect the whole response; never raises on SW."""
        body = data  # no copy: a PIN body stays in the caller's wipeable buffer
        while len(body) > SHORT_MAX:
            # Le belongs to the last block only; each earlier block must answer 9000.
            block = encode_command(cla | CLA_CHAINING, ins, p1, p2, body[:SHORT_MAX])
            part, sw = self._exchange_one(block)
            if sw != SW_OK:
                return Response(data=part, sw=sw)
            body = body[SHORT_MAX:]
        chunks = []
        received, sw = self._exchange_one(encode_command(cla, ins, p1, p2, body, le))
        chunks.append(received)
        total = len(received)
        rounds = 0
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > MAX_GET_RESPONSE_ROUNDS:
                raise CardCommunicationError(
                    detail=f"the card still had more to send after {rounds - 1} GET RESPONSEs"
                )
            get_response = encode_command(
                0x00, Ins.GET_RESPONSE, 0x00, 0x00, b"", (sw & 0xFF) or 256
            )
            received, sw = self._exchange_one(get_response)
            if not received and sw >> 8 == 0x61:
                # A GET RESPONSE that brings nothing yet says "more" makes no progress:
                # asking again would loop with the card lock and transaction held.
                raise CardCommunicationError(detail=f"GET RESPONSE answered {sw:04X} with no data")
            chunks.append(received)
            total += len(received)
            if total > MAX_RESPONSE_BYTES:
                raise CardCommunicationError(detail="the card's answer is over 64 KiB")
        return Response(data=b"".join(chunks), sw=sw)

    def send(
        self, cla: int, ins: int, p1: int, p2: int, data: bytes | bytearray = b"", le: int = 0
    ) -> bytes:
        """Send a command; its response data on 9000, else the typed error."""
        response = self.exchange(cla, ins, p1, p2, data, le)
        if not response.ok:
            raise error_for_status(response.sw)
        return response.data
