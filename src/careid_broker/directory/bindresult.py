"""Why a directory refused a bind: the password policy control and AD's sub-codes.

A refused simple bind is always result 49 (invalidCredentials); the reason, when the
server gives one, is elsewhere:
- OpenLDAP's ppolicy overlay (draft-behera-ldap-password-policy-10 §6.2) answers a bind
  that carried the password policy request control with a response control whose
  `error` field says e.g. accountLocked.
- Active Directory puts a hex sub-code in the diagnostic message:
  "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563"
  (MS-ADTS, and Microsoft's "LDAP bind error codes" list).
"""

from __future__ import annotations

import re
from enum import IntEnum, unique

from careid_protocol import tlv

PPOLICY_CONTROL_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
# Sent with every user bind; not critical, so a server without ppolicy ignores it.
PPOLICY_REQUEST = (PPOLICY_CONTROL_OID, False, None)

_SEQUENCE = 0x30
_WARNING = 0xA0  # [0] constructed: the CHOICE is explicitly tagged
_ERROR = 0x81  # [1] primitive: ENUMERATED under IMPLICIT TAGS


@unique
class PasswordPolicyError(IntEnum):
    """The `error` of a PasswordPolicyResponseValue."""

    PASSWORD_EXPIRED = 0
    ACCOUNT_LOCKED = 1
    CHANGE_AFTER_RESET = 2
    PASSWORD_MOD_NOT_ALLOWED = 3
    MUST_SUPPLY_OLD_PASSWORD = 4
    INSUFFICIENT_PASSWORD_QUALITY = 5
    PASSWORD_TOO_SHORT = 6
    PASSWORD_TOO_YOUNG = 7
    PASSWORD_IN_HISTORY = 8
    PASSWORD_TOO_LONG = 9  # an OpenLDAP addition


@unique
class AdBindSubcode(IntEnum):
    """Active Directory's "data NNN" reasons for a refused bind (hexadecimal)."""

    NO_SUCH_USER = 0x525
    INVALID_CREDENTIALS = 0x52E
    NOT_PERMITTED_NOW = 0x530
    NOT_PERMITTED_HERE = 0x531
    PASSWORD_EXPIRED = 0x532
    ACCOUNT_DISABLED = 0x533
    ACCOUNT_EXPIRED = 0x701
    MUST_RESET_PASSWORD = 0x773
    ACCOUNT_LOCKED = 0x775


def parse_ppolicy_error(value: bytes) -> PasswordPolicyError | int | None:
    """The response control's error, if it has one (unknown numbers are returned as int).

    Raises ValueError when the bytes are not a PasswordPolicyResponseValue.
    """
    try:
        body = tlv.parse_single(value, _SEQUENCE)
        fields = tlv.parse(body)
    except tlv.TlvError as exc:
        raise ValueError(f"malformed password policy response: {exc}") from None
    for item in fields:
        if item.tag == _ERROR:
            if not 1 <= len(item.value) <= 4:
                raise ValueError("malformed password policy error field")
            number = int.from_bytes(item.value, "big", signed=True)
            try:
                return PasswordPolicyError(number)
            except ValueError:
                return number
        if item.tag != _WARNING:
            raise ValueError(f"unexpected field 0x{item.tag:X} in password policy response")
    return None


_AD_DATA = re.compile(r"\bdata ([0-9a-fA-F]{1,8})\b")


def parse_ad_subcode(diagnostic: str) -> AdBindSubcode | int | None:
    """The "data NNN" sub-code of an AD bind diagnostic message, if there is one."""
    match = _AD_DATA.search(diagnostic)
    if match is None:
        return None
    number = int(match.group(1), 16)
    try:
        return AdBindSubcode(number)
    except ValueError:
        return number
