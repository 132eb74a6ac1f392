"""PIV wire constants (NIST SP 800-73-4 Part 1 and Part 2), shared by every PIV speaker.

Only the constants live here; the card session (agent) and the virtual card (devkit) are
independent implementations, so OpenSC can arbitrate between them.
"""

from __future__ import annotations

from enum import IntEnum, unique

#: The full PIV application identifier (SP 800-73-4 Part 1 §2.2).
PIV_AID = bytes.fromhex("A000000308000010000100")
#: The NIST RID, the shortest AID prefix a PIV card must accept in SELECT.
PIV_RID = bytes.fromhex("A000000308")


@unique
class Ins(IntEnum):
    """Instruction bytes used for sign-in (SP 800-73-4 Part 2 §3)."""

    SELECT = 0xA4
    GET_DATA = 0xCB
    VERIFY = 0x20
    CHANGE_REFERENCE_DATA = 0x24
    RESET_RETRY_COUNTER = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GET_RESPONSE = 0xC0


@unique
class DataObject(IntEnum):
    """BER-TLV tags of PIV data objects (SP 800-73-4 Part 1 Table 3)."""

    CCC = 0x5FC107
    CHUID = 0x5FC102
    AUTHENTICATION_CERTIFICATE = 0x5FC105  # slot 9A
    SIGNATURE_CERTIFICATE = 0x5FC10A  # slot 9C
    KEY_MANAGEMENT_CERTIFICATE = 0x5FC10B  # slot 9D
    CARD_AUTHENTICATION_CERTIFICATE = 0x5FC101  # slot 9E
    KEY_HISTORY = 0x5FC10C
    DISCOVERY = 0x7E


@unique
class KeyReference(IntEnum):
    """Key and PIN references (SP 800-78-4 Table 4-1; SP 800-73-4 Part 2 §3.2)."""

    PIV_AUTHENTICATION = 0x9A
    DIGITAL_SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTHENTICATION = 0x9E
    PIN = 0x80
    PUK = 0x81
    GLOBAL_PIN = 0x00


@unique
class Algorithm(IntEnum):
    """Cryptographic mechanism identifiers (SP 800-78-4 Table 6-2)."""

    RSA_1024 = 0x06
    RSA_2048 = 0x07
    RSA_3072 = 0x05
    ECC_P256 = 0x11
    ECC_P384 = 0x14


@unique
class StatusWord(IntEnum):
    """Status words a PIV card answers (SP 800-73-4 Part 2 Table 6)."""

    SUCCESS = 0x9000
    MORE_DATA = 0x6100  # low byte: bytes remaining (00 = 256 or more)
    VERIFY_FAIL = 0x63C0  # low nibble: retries left
    MEMORY_ERROR = 0x6581
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    INCORRECT_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_NOT_FOUND = 0x6A88
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


#: Tags inside the dynamic authentication template 7C (SP 800-73-4 Part 2 Table 7).
TAG_DYNAMIC_AUTH_TEMPLATE = 0x7C
TAG_WITNESS = 0x80
TAG_CHALLENGE = 0x81
TAG_RESPONSE = 0x82
TAG_EXPONENTIATION = 0x85

#: Tags of a certificate data object (SP 800-73-4 Part 1 Table 10).
TAG_DATA_OBJECT = 0x53
TAG_CERTIFICATE = 0x70
TAG_CERT_INFO = 0x71
TAG_ERROR_DETECTION = 0xFE
#: The GET DATA tag list (SP 800-73-4 Part 2 §3.1.2).
TAG_TAG_LIST = 0x5C
