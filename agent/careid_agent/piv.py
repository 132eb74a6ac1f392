"""The PIV card application session (NIST SP 800-73-4 Part 2), for sign-in only.

One method per card operation, each a fixed, small number of APDUs, so the facade above
can count exactly what a sign-in costs. The PIN is encoded into a bytearray that is
wiped after use; it is never logged and never kept.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from careid_agent.apdu import ApduProtocol, error_for_status
from careid_agent.errors import NoCertificateError, NotPivCardError, PinBlockedError
from careid_agent.piv_objects import (
    CERTIFICATE_OBJECTS,
    Chuid,
    PinStatus,
    auth_template,
    check_signature_shape,
    encode_pin,
    load_certificate,
    parse_auth_response,
    parse_certificate_object,
    parse_chuid,
    signature_input,
)
from careid_agent.transport import ApduTransport
from careid_protocol import tlv
from careid_protocol.piv import (
    PIV_AID,
    TAG_TAG_LIST,
    Algorithm,
    DataObject,
    Ins,
    KeyReference,
    StatusWord,
)

log = logging.getLogger(__name__)

#: SELECT answers that mean "no such application here" rather than a broken card.
_NOT_PIV = frozenset(
    {
        int(StatusWord.FILE_NOT_FOUND),
        int(StatusWord.FUNCTION_NOT_SUPPORTED),
        int(StatusWord.INS_NOT_SUPPORTED),
        int(StatusWord.CLA_NOT_SUPPORTED),
        int(StatusWord.INCORRECT_P1P2),
        0x6999,  # "applet selection failed" (Java Card)
    }
)
_VERIFY_FAIL_MASK = 0xFFF0


class PivSession:
    """PIV commands over an `ApduProtocol` (or any connection with `transmit`)."""

    def __init__(self, transport: ApduProtocol | ApduTransport) -> None:
        self.protocol = (
            transport if isinstance(transport, ApduProtocol) else ApduProtocol(transport)
        )

    def select(self) -> bytes:
        """SELECT the PIV application by its full AID; the application property template.

        Raises NotPivCardError when the card has no PIV application.
        """
        response = self.protocol.exchange(0x00, Ins.SELECT, 0x04, 0x00, PIV_AID, le=256)
        if response.sw in _NOT_PIV:
            raise NotPivCardError()
        if not response.ok:
            raise error_for_status(response.sw)
        return response.data

    def get_data(self, data_object: int) -> bytes | None:
        """GET DATA for one object (`00 CB 3F FF 5C <tag>`); None when the card has none."""
        tag_list = tlv.encode(TAG_TAG_LIST, tlv.encode_tag(data_object))
        response = self.protocol.exchange(0x00, Ins.GET_DATA, 0x3F, 0xFF, tag_list, le=256)
        if response.sw == StatusWord.FILE_NOT_FOUND:
            return None
        if not response.ok:
            raise error_for_status(response.sw)
        return response.data

    def read_certificate_der(self, slot: int = KeyReference.PIV_AUTHENTICATION) -> bytes:
        """The DER certificate of a key slot (9A by default), decompressed if need be."""
        response = self.get_data(CERTIFICATE_OBJECTS[slot])
        if response is None:
            raise NoCertificateError()
        return parse_certificate_object(response)

    def read_certificate(self, slot: int = KeyReference.PIV_AUTHENTICATION) -> x509.Certificate:
        """The certificate of a key slot (9A by default)."""
        return load_certificate(self.read_certificate_der(slot))

    def read_chuid(self) -> Chuid | None:
        """The CHUID, or None when the card has none (YubiKeys ship without one)."""
        response = self.get_data(DataObject.CHUID)
        return None if response is None else parse_chuid(response)

    def pin_status(self) -> PinStatus:
        """Ask whether the PIN is verified and how many tries are left, without a PIN."""
        response = self.protocol.exchange(0x00, Ins.VERIFY, 0x00, KeyReference.PIN)
        if response.ok:
            return PinStatus(verified=True, retries_left=None)
        if response.sw & _VERIFY_FAIL_MASK == StatusWord.VERIFY_FAIL:
            return PinStatus(verified=False, retries_left=response.sw & 0x0F)
        if response.sw == StatusWord.AUTH_METHOD_BLOCKED:
            return PinStatus(verified=False, retries_left=0)
        raise error_for_status(response.sw)

    def pin_retries(self) -> int | None:
        """Tries left before the PIN blocks; None if the PIN is already verified.

        Raises PinBlockedError when none are left.
        """
        status = self.pin_status()
        if status.blocked:
            raise PinBlockedError()
        return status.retries_left

    def verify_pin(self, pin: str | bytes | bytearray) -> None:
        """VERIFY the PIN (`00 20 00 80 08 <PIN FF-padded>`).

        Raises PinFormatError (nothing sent), WrongPinError(retries_left), or
        PinBlockedError — also when this very try used the last retry (63C0).
        """
        body = encode_pin(pin)
        try:
            self.protocol.send(0x00, Ins.VERIFY, 0x00, KeyReference.PIN, body)
        finally:
            body[:] = bytes(len(body))

    def logout(self) -> None:
        """Reset the PIN-verified state (`00 20 FF 80`, SP 800-73-4 Part 2 §3.2.1)."""
        self.protocol.send(0x00, Ins.VERIFY, 0xFF, KeyReference.PIN)

    def sign_digest(
        self,
        digest: bytes,
        *,
        algorithm: Algorithm,
        hash_algorithm: hashes.HashAlgorithm,
        slot: int = KeyReference.PIV_AUTHENTICATION,
    ) -> bytes:
        """GENERAL AUTHENTICATE over a digest with the slot's key (needs a verified PIN).

        ECC: the card signs the hash and answers DER ECDSA. RSA: we send the full PKCS#1
        v1.5 block and the card answers the raw signature. Either is checked for shape.
        """
        challenge = signature_input(digest, algorithm, hash_algorithm)
        response = self.protocol.send(
            0x00, Ins.GENERAL_AUTHENTICATE, algorithm, slot, auth_template(challenge), le=256
        )
        return check_signature_shape(parse_auth_response(response), algorithm)
