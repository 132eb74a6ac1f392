"""PIN-pad readers: secure PIN entry by PC/SC Part 10 (FEATURE_VERIFY_PIN_DIRECT).

With a PIN pad the person types the PIN on the reader, and the reader inserts it into a
VERIFY APDU we prepared; the PIN never passes through this computer, so no malware on it
can read it. PC/SC Part 10 (v2.02.09, "IFDs with Secure PIN Entry Capabilities"):

1. `SCardControl(CM_IOCTL_GET_FEATURE_REQUEST)` answers TLVs `tag(1) 04 code(4, big
   endian)` — the control code of each feature the reader offers (§2.3).
2. `SCardControl(code of FEATURE_VERIFY_PIN_DIRECT, PIN_VERIFY_STRUCTURE)` runs the
   entry and answers the card's status word (§2.5.2), or the reader's own 6400 (timeout),
   6401 (cancel key) or 6B80 (a parameter it dislikes).

For PIV the APDU is `00 20 00 80 08` + eight 0xFF bytes: the reader writes the ASCII
digits left-justified over the template, so the rest stays 0xFF — exactly the padded PIN
SP 800-73-4 Part 2 §3.2.1 asks for.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, unique
from typing import Protocol, runtime_checkable

from careid_agent.apdu import error_for_status
from careid_agent.card import PinRequest
from careid_agent.errors import (
    CardCommunicationError,
    CardError,
    PinEntryCancelledError,
    PinEntryTimeoutError,
    PinFormatError,
    PinProviderUnavailableError,
)
from careid_agent.piv_objects import PIN_MAX, PIN_MIN, PIN_PAD
from careid_agent.transport import CardConnection
from careid_protocol.piv import Ins, KeyReference

log = logging.getLogger(__name__)

#: The function number of CM_IOCTL_GET_FEATURE_REQUEST, turned into the platform's
#: control code by SCARD_CTL_CODE.
GET_FEATURE_REQUEST_FUNCTION = 3400


@unique
class Feature(IntEnum):
    """PC/SC Part 10 feature tags (§2.3, Table 2-1)."""

    VERIFY_PIN_START = 0x01
    VERIFY_PIN_FINISH = 0x02
    MODIFY_PIN_START = 0x03
    MODIFY_PIN_FINISH = 0x04
    GET_KEY_PRESSED = 0x05
    VERIFY_PIN_DIRECT = 0x06
    MODIFY_PIN_DIRECT = 0x07
    MCT_READER_DIRECT = 0x08
    MCT_UNIVERSAL = 0x09
    IFD_PIN_PROPERTIES = 0x0A
    ABORT = 0x0B
    SET_SPE_MESSAGE = 0x0C
    VERIFY_PIN_DIRECT_APP_ID = 0x0D
    MODIFY_PIN_DIRECT_APP_ID = 0x0E
    WRITE_DISPLAY = 0x0F
    GET_KEY = 0x10
    IFD_DISPLAY_PROPERTIES = 0x11
    GET_TLV_PROPERTIES = 0x12
    CCID_ESC_COMMAND = 0x13


@unique
class ReaderStatus(IntEnum):
    """Status words the reader itself answers to a PIN entry (§2.5.2)."""

    TIMEOUT = 0x6400
    CANCELLED = 0x6401
    PINS_DIFFER = 0x6402
    PIN_LENGTH = 0x6403
    INVALID_PARAMETER = 0x6B80


#: bmFormatString: system units are bytes (bit 7), PIN at offset 0 (bits 6-3),
#: left-justified (bit 2 clear), ASCII digits (bits 1-0 = 10).
FORMAT_BYTES_LEFT_ASCII = 0x82
#: bmPINBlockString: no PIN length field (bits 7-4 = 0), an 8-byte PIN block.
PIN_BLOCK_8_BYTES = 0x08
#: bEntryValidationCondition: the person presses the reader's OK key.
VALIDATE_ON_OK_KEY = 0x02
#: wLangId for the reader's own messages: English (United Kingdom).
LANG_EN_GB = 0x0809


def parse_features(data: bytes) -> dict[int, int]:
    """Feature tag → control code from a GET_FEATURE_REQUEST answer.

    Malformed trailing bytes end the list rather than failing: a reader with a quirky
    answer simply offers fewer features.
    """
    features: dict[int, int] = {}
    offset = 0
    while offset + 2 <= len(data):
        tag, length = data[offset], data[offset + 1]
        value = data[offset + 2 : offset + 2 + length]
        if length != 4 or len(value) != 4:
            break
        features[tag] = int.from_bytes(value, "big")  # §2.3: always big-endian
        offset += 2 + length
    return features


@dataclass(frozen=True, kw_only=True)
class PinVerifyStructure:
    """PIN_VERIFY_STRUCTURE (Part 10 §2.5.2; the CCID PC_to_RDR_Secure body)."""

    timeout: int = 0
    """bTimerOut: seconds for the whole entry; 0 is the reader's default."""
    timeout_after_key: int = 0
    """bTimerOut2: seconds after the first key press."""
    format_string: int = FORMAT_BYTES_LEFT_ASCII
    pin_block_string: int = PIN_BLOCK_8_BYTES
    pin_length_format: int = 0x00
    min_digits: int = PIN_MIN
    max_digits: int = PIN_MAX
    entry_validation: int = VALIDATE_ON_OK_KEY
    number_message: int = 0x01
    lang_id: int = LANG_EN_GB
    msg_index: int = 0x00
    apdu: bytes

    def to_bytes(self) -> bytes:
        """The structure on the wire: packed, 16- and 32-bit fields little-endian."""
        for name in ("timeout", "timeout_after_key", "min_digits", "max_digits"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} does not fit in a byte")
        header = struct.pack(
            "<BBBBBHBBHB3sI",
            self.timeout,
            self.timeout_after_key,
            self.format_string,
            self.pin_block_string,
            self.pin_length_format,
            # wPINMaxExtraDigit is 0xXXYY: XX the minimum, YY the maximum digits.
            (self.min_digits << 8) | self.max_digits,
            self.entry_validation,
            self.number_message,
            self.lang_id,
            self.msg_index,
            b"\x00\x00\x00",  # bTeoPrologue: T=1 prologue, filled in by the reader
            len(self.apdu),
        )
        return header + self.apdu


def piv_verify_structure(timeout: float) -> PinVerifyStructure:
    """The structure for the PIV PIN: VERIFY key 80 with an 0xFF-filled 8-byte block."""
    apdu = bytes([0x00, Ins.VERIFY, 0x00, KeyReference.PIN, PIN_MAX]) + bytes([PIN_PAD] * 8)
    return PinVerifyStructure(timeout=max(1, min(int(timeout), 0xFF)), apdu=apdu)


@runtime_checkable
class ControlChannel(Protocol):
    """A connection that can talk to the reader itself (SCardControl)."""

    def control_code(self, function: int) -> int:
        """The platform's control code for a Part 10 function number."""
        ...

    def control(self, code: int, data: bytes | bytearray = b"") -> bytes:
        """Send a control command to the reader; its answer."""
        ...


class ReaderPinPad:
    """`card.PinPad` for readers that offer FEATURE_VERIFY_PIN_DIRECT."""

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        notify: Callable[[PinRequest], None] | None = None,
    ) -> None:
        self._timeout = timeout
        self._notify = notify
        self._features: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def features(self, connection: CardConnection) -> dict[int, int]:
        """The reader's Part 10 features (asked until a reader answers, then remembered).

        Raises the CardError of a query that could not be put (another program reset
        the card or holds the reader, the reader or PC/SC went away): remembering "no
        features" then would have a PIN-pad reader's PIN typed on the keyboard.
        """
        with self._lock:
            known = self._features.get(connection.reader)
        if known is not None:
            return known
        if not isinstance(connection, ControlChannel):
            return {}
        try:
            answer = connection.control(connection.control_code(GET_FEATURE_REQUEST_FUNCTION))
        except CardError as exc:
            if type(exc) is not CardCommunicationError:
                log.info("could not ask reader %r for its PIN pad: %s", connection.reader, exc)
                raise
            # The reader itself refused: most readers without a keypad do (vpcd does).
            log.debug("reader %r answers no Part 10 features: %s", connection.reader, exc)
            answer = b""
        features = parse_features(answer)
        with self._lock:
            self._features[connection.reader] = features
        if Feature.VERIFY_PIN_DIRECT in features:
            log.info("reader %r has a PIN pad: the PIN is typed on the reader", connection.reader)
        return features

    def available(self, connection: CardConnection) -> bool:
        """Whether the reader offers secure PIN verification."""
        return Feature.VERIFY_PIN_DIRECT in self.features(connection)

    def verify(self, connection: CardConnection, request: PinRequest) -> None:
        """Have the person type the PIN on the reader (inside the caller's transaction)."""
        code = self.features(connection).get(Feature.VERIFY_PIN_DIRECT)
        if code is None or not isinstance(connection, ControlChannel):
            raise PinProviderUnavailableError(
                "This smartcard reader has no PIN pad. Use a PIN-pad reader, or ask IT"
                " support to change the agent's PIN entry setting."
            )
        if self._notify is not None:
            self._notify(request)
        structure = piv_verify_structure(self._timeout).to_bytes()
        answer = connection.control(code, structure)
        if len(answer) < 2:
            raise error_for_status(0x6F00)
        sw = int.from_bytes(answer[-2:], "big")
        if sw == 0x9000:
            return
        if sw == ReaderStatus.TIMEOUT:
            raise PinEntryTimeoutError()
        if sw == ReaderStatus.CANCELLED:
            raise PinEntryCancelledError()
        if sw == ReaderStatus.PIN_LENGTH:
            raise PinFormatError()
        if sw == ReaderStatus.INVALID_PARAMETER:
            raise PinProviderUnavailableError(
                "The smartcard reader's PIN pad refused the request. Ask IT support to check"
                " the reader."
            )
        raise error_for_status(sw)
