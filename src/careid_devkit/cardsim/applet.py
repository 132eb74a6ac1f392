"""The virtual card's PIV application: command APDU in, response APDU out (no I/O).

Faithful to NIST SP 800-73-4 Part 2 for what sign-in uses, so that OpenSC's PIV driver
and the agent can both be tested against it: SELECT, GET DATA, VERIFY, CHANGE REFERENCE
DATA, RESET RETRY COUNTER, GENERAL AUTHENTICATE with the 9A key, command chaining and
response chaining (GET RESPONSE). No application is selected at power-on, so a host
that forgets to SELECT after a reset finds out here.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from careid_devkit.card_profile import CardProfile
from careid_devkit.cardsim.apdu import (
    ApduFormatError,
    ApduLogEntry,
    CommandApdu,
    Direction,
    log_entry,
    parse_command,
)
from careid_devkit.cardsim.contents import (
    SELECT_TEMPLATE,
    CardContents,
    pin_block,
    pin_from_block,
)
from careid_protocol import tlv
from careid_protocol.piv import (
    PIV_AID,
    PIV_RID,
    TAG_CHALLENGE,
    TAG_DYNAMIC_AUTH_TEMPLATE,
    TAG_RESPONSE,
    TAG_TAG_LIST,
    Ins,
    KeyReference,
    StatusWord,
)

log = logging.getLogger(__name__)

#: A generic PIV ATR: direct convention, T=1 only, one historical byte (80: compact-TLV
#: with no objects), TCK. Nothing in it names a product OpenSC special-cases.
PIV_ATR = bytes.fromhex("3B81018000")

#: The most data a command chain may accumulate; far above an RSA-2048 GENERAL
#: AUTHENTICATE (~265 bytes) and small enough that a runaway host cannot exhaust memory.
MAX_CHAINED_DATA = 4096

Response = bytes


def _sw(status: int) -> Response:
    return status.to_bytes(2, "big")


class PivApplet:
    """A PIV card application backed by a card profile (DEMO/TEST MATERIAL)."""

    def __init__(
        self,
        profile: CardProfile,
        *,
        on_counters_changed: Callable[[CardProfile], None] | None = None,
        apdu_log: Callable[[ApduLogEntry], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._contents = CardContents.from_profile(profile)
        self._profile = profile
        self._on_counters_changed = on_counters_changed
        self._apdu_log = apdu_log
        self._clock = clock
        # Both transports call process() from their own threads; one APDU at a time.
        self._lock = threading.RLock()
        self._selected = False
        self._pin_verified = False
        self._chain: CommandApdu | None = None
        self._pending = b""
        self._handlers: dict[int, Callable[[CommandApdu], Response]] = {
            Ins.GET_DATA: self._get_data,
            Ins.VERIFY: self._verify,
            Ins.CHANGE_REFERENCE_DATA: self._change_reference_data,
            Ins.RESET_RETRY_COUNTER: self._reset_retry_counter,
            Ins.GENERAL_AUTHENTICATE: self._general_authenticate,
        }

    @property
    def atr(self) -> bytes:
        """The answer-to-reset the reader reports."""
        return PIV_ATR

    @property
    def profile(self) -> CardProfile:
        """The profile as it is now (retry counters and PIN included)."""
        return self._profile

    @property
    def pin_verified(self) -> bool:
        """Whether the PIV PIN is verified in the current card session."""
        return self._pin_verified

    def reset(self) -> None:
        """Power off, power on or warm reset: volatile state is gone, counters are not."""
        with self._lock:
            self._selected = False
            self._pin_verified = False
            self._chain = None
            self._pending = b""

    def process(self, command: bytes) -> bytes:
        """Answer one command APDU: response data followed by the two status bytes."""
        with self._lock:
            self._log(Direction.COMMAND, command)
            try:
                response = self._process(command)
            except Exception:
                # A card that hits an internal fault answers 6F00 and stays usable; the
                # traceback is what a developer needs to fix the simulator.
                log.exception("virtual card fault on command header %s", command[:4].hex())
                self._chain, self._pending = None, b""
                response = _sw(StatusWord.NO_PRECISE_DIAGNOSIS)
            self._log(Direction.RESPONSE, response)
            return response

    def _log(self, direction: Direction, raw: bytes) -> None:
        if self._apdu_log is None:
            return
        try:
            self._apdu_log(log_entry(direction, raw, self._clock()))
        except Exception:
            # A full disk under the trace file must not take the card out of the reader.
            log.exception("could not write the APDU log")

    # -- framing: parsing, chaining, GET RESPONSE ------------------------------------

    def _process(self, raw: bytes) -> Response:
        try:
            apdu = parse_command(raw)
        except ApduFormatError:
            self._chain, self._pending = None, b""
            return _sw(StatusWord.WRONG_LENGTH)
        if apdu.cla & ~0x10:
            # No secure messaging and no logical channels on this card.
            return _sw(StatusWord.CLA_NOT_SUPPORTED)
        if apdu.ins == Ins.GET_RESPONSE and not apdu.chained:
            return self._get_response(apdu)
        self._pending = b""  # ISO/IEC 7816-4: unread response data is lost on a new command
        chain, self._chain = self._chain, None
        if chain is not None and (chain.ins, chain.p1p2) == (apdu.ins, apdu.p1p2):
            apdu = replace(apdu, data=chain.data + apdu.data)
        if len(apdu.data) > MAX_CHAINED_DATA:
            return _sw(StatusWord.WRONG_LENGTH)
        if apdu.chained:
            self._chain = apdu
            return _sw(StatusWord.SUCCESS)
        return self._dispatch(apdu)

    def _respond(self, data: bytes, le: int | None) -> Response:
        # SP 800-73-4 Part 2 §3.3.2 / ISO 7816-4: at most Le bytes, then 61xx announcing
        # what is left (00 = 256 or more); an absent Le is read as 256.
        limit = 256 if le is None else le
        if len(data) <= limit:
            return data + _sw(StatusWord.SUCCESS)
        self._pending = data[limit:]
        return data[:limit] + _sw(StatusWord.MORE_DATA | (min(len(self._pending), 256) & 0xFF))

    def _get_response(self, apdu: CommandApdu) -> Response:
        if apdu.p1p2 != 0:
            return _sw(StatusWord.INCORRECT_P1P2)
        if not self._pending:
            return _sw(StatusWord.CONDITIONS_NOT_SATISFIED)
        data, self._pending = self._pending, b""
        return self._respond(data, apdu.le)

    def _dispatch(self, apdu: CommandApdu) -> Response:
        if apdu.ins == Ins.SELECT:
            return self._select(apdu)
        handler = self._handlers.get(apdu.ins)
        if handler is None or not self._selected:
            # With no application selected nothing but SELECT is understood.
            return _sw(StatusWord.INS_NOT_SUPPORTED)
        return handler(apdu)

    # -- SELECT and GET DATA ------------------------------------------------------------

    def _select(self, apdu: CommandApdu) -> Response:
        aid = apdu.data
        if apdu.p1 != 0x04 or len(aid) < len(PIV_RID) or not PIV_AID.startswith(aid):
            # No file system and no other application. A failed SELECT leaves the current
            # application (and its PIN state) as it was.
            return _sw(StatusWord.FILE_NOT_FOUND)
        if apdu.p2 not in (0x00, 0x0C):  # 0C: ISO/IEC 7816-4 "no response data"
            return _sw(StatusWord.INCORRECT_P1P2)
        # Re-selecting PIV keeps the PIN verified: OpenSC re-SELECTs and expects that.
        self._selected = True
        if apdu.p2 == 0x0C:
            return _sw(StatusWord.SUCCESS)
        return self._respond(SELECT_TEMPLATE, apdu.le)

    def _get_data(self, apdu: CommandApdu) -> Response:
        if apdu.p1p2 != 0x3FFF:
            return _sw(StatusWord.INCORRECT_P1P2)
        try:
            tag_bytes = tlv.parse_single(apdu.data, TAG_TAG_LIST)
        except tlv.TlvError:
            return _sw(StatusWord.INCORRECT_DATA)
        if len(tag_bytes) not in (1, 3):
            return _sw(StatusWord.INCORRECT_DATA)
        value = self._contents.objects.get(int.from_bytes(tag_bytes, "big"))
        if value is None:
            return _sw(StatusWord.FILE_NOT_FOUND)
        return self._respond(value, apdu.le)

    # -- PIN and PUK ----------------------------------------------------------------------

    def _verify(self, apdu: CommandApdu) -> Response:
        profile = self._profile
        if apdu.p2 != KeyReference.PIN:
            return _sw(StatusWord.REFERENCE_NOT_FOUND)  # no global PIN, no OCC
        if apdu.p1 == 0xFF and not apdu.data:
            self._pin_verified = False  # SP 800-73-4 Part 2 §3.2.1: reset security status
            return _sw(StatusWord.SUCCESS)
        if apdu.p1 != 0x00:
            return _sw(StatusWord.INCORRECT_P1P2)
        if not apdu.data:
            # Status query: no try is used up.
            if profile.pin_retries_left == 0:
                return _sw(StatusWord.AUTH_METHOD_BLOCKED)
            if self._pin_verified:
                return _sw(StatusWord.SUCCESS)
            return _sw(StatusWord.VERIFY_FAIL | profile.pin_retries_left)
        if len(apdu.data) != 8:
            return _sw(StatusWord.INCORRECT_DATA)
        if profile.pin_retries_left == 0:
            return _sw(StatusWord.AUTH_METHOD_BLOCKED)
        if not hmac.compare_digest(apdu.data, pin_block(profile.pin)):
            self._pin_verified = False
            left = profile.pin_retries_left - 1
            self._update(pin_retries_left=left)
            return _sw(StatusWord.VERIFY_FAIL | left)
        self._pin_verified = True
        self._update(pin_retries_left=profile.pin_retries_max)
        return _sw(StatusWord.SUCCESS)

    def _change_reference_data(self, apdu: CommandApdu) -> Response:
        if apdu.p1 != 0x00:
            return _sw(StatusWord.INCORRECT_P1P2)
        if apdu.p2 not in (KeyReference.PIN, KeyReference.PUK):
            return _sw(StatusWord.REFERENCE_NOT_FOUND)
        is_pin = apdu.p2 == KeyReference.PIN
        if len(apdu.data) != 16:
            return _sw(StatusWord.INCORRECT_DATA)
        profile = self._profile
        current = profile.pin if is_pin else profile.puk
        left = profile.pin_retries_left if is_pin else profile.puk_retries_left
        if left == 0:
            return _sw(StatusWord.AUTH_METHOD_BLOCKED)
        new_value = pin_from_block(apdu.data[8:])
        if new_value is None:
            return _sw(StatusWord.INCORRECT_DATA)  # checked first: a typo costs no try
        if not hmac.compare_digest(apdu.data[:8], pin_block(current)):
            if is_pin:
                self._pin_verified = False
                self._update(pin_retries_left=left - 1)
            else:
                self._update(puk_retries_left=left - 1)
            return _sw(StatusWord.VERIFY_FAIL | (left - 1))
        if is_pin:
            self._update(pin=new_value, pin_retries_left=profile.pin_retries_max)
        else:
            self._update(puk=new_value, puk_retries_left=profile.puk_retries_max)
        return _sw(StatusWord.SUCCESS)

    def _reset_retry_counter(self, apdu: CommandApdu) -> Response:
        if apdu.p1 != 0x00:
            return _sw(StatusWord.INCORRECT_P1P2)
        if apdu.p2 != KeyReference.PIN:
            return _sw(StatusWord.REFERENCE_NOT_FOUND)
        if len(apdu.data) != 16:
            return _sw(StatusWord.INCORRECT_DATA)
        profile = self._profile
        if profile.puk_retries_left == 0:
            return _sw(StatusWord.AUTH_METHOD_BLOCKED)
        new_pin = pin_from_block(apdu.data[8:])
        if new_pin is None:
            return _sw(StatusWord.INCORRECT_DATA)
        if not hmac.compare_digest(apdu.data[:8], pin_block(profile.puk)):
            left = profile.puk_retries_left - 1
            self._update(puk_retries_left=left)
            return _sw(StatusWord.VERIFY_FAIL | left)
        self._pin_verified = False
        self._update(
            pin=new_pin,
            pin_retries_left=profile.pin_retries_max,
            puk_retries_left=profile.puk_retries_max,
        )
        return _sw(StatusWord.SUCCESS)

    def _update(
        self,
        *,
        pin: str | None = None,
        puk: str | None = None,
        pin_retries_left: int | None = None,
        puk_retries_left: int | None = None,
    ) -> None:
        old = self._profile
        new = replace(
            old.with_counters(
                pin_retries_left=old.pin_retries_left
                if pin_retries_left is None
                else pin_retries_left,
                puk_retries_left=old.puk_retries_left
                if puk_retries_left is None
                else puk_retries_left,
            ),
            pin=old.pin if pin is None else pin,
            puk=old.puk if puk is None else puk,
        )
        if new == old:
            return
        self._profile = new
        if self._on_counters_changed is not None:
            self._on_counters_changed(new)

    # -- GENERAL AUTHENTICATE ---------------------------------------------------------

    def _general_authenticate(self, apdu: CommandApdu) -> Response:
        key = self._contents.key
        if apdu.p2 != KeyReference.PIV_AUTHENTICATION or apdu.p1 != key.algorithm:
            return _sw(StatusWord.INCORRECT_P1P2)
        if not self._pin_verified:
            return _sw(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        challenge = _signing_request(apdu.data)
        if challenge is None:
            return _sw(StatusWord.INCORRECT_DATA)
        try:
            signature = key.sign(challenge)
        except ValueError:
            return _sw(StatusWord.INCORRECT_DATA)
        body = tlv.encode(TAG_DYNAMIC_AUTH_TEMPLATE, tlv.encode(TAG_RESPONSE, signature))
        return self._respond(body, apdu.le)


def _signing_request(data: bytes) -> bytes | None:
    """The challenge of `7C { 82 00, 81 <data> }` (either order), or None if malformed."""
    try:
        items = tlv.parse(tlv.parse_single(data, TAG_DYNAMIC_AUTH_TEMPLATE))
    except tlv.TlvError:
        return None
    by_tag = {item.tag: item.value for item in items}
    if len(items) != 2 or set(by_tag) != {TAG_CHALLENGE, TAG_RESPONSE}:
        return None
    if by_tag[TAG_RESPONSE] or not by_tag[TAG_CHALLENGE]:
        return None
    return by_tag[TAG_CHALLENGE]
