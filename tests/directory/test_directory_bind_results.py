"""Why a bind was refused: ppolicy response controls and AD sub-codes (no server)."""

from __future__ import annotations

import pytest

from careid_broker.directory.bindresult import (
    PPOLICY_CONTROL_OID,
    AdBindSubcode,
    PasswordPolicyError,
    parse_ad_subcode,
    parse_ppolicy_error,
)
from careid_broker.directory.refusal import refusal_for, restriction_after_bind
from careid_broker.errors import (
    AccountDisabledError,
    AccountExpiredError,
    AccountLockedError,
    BrokerError,
    DirectoryUnavailableError,
    InvalidCredentialsError,
    PasswordExpiredError,
)

# PasswordPolicyResponseValue encodings (draft-behera-ldap-password-policy-10 §6.2),
# written out by hand: 30 = SEQUENCE, A0 = [0] warning (explicit CHOICE), 80/81 inside
# it = timeBeforeExpiration/graceAuthNsRemaining, 81 = [1] error (implicit ENUMERATED).
LOCKED = bytes.fromhex("3003810101")
EXPIRED_WITH_GRACE = bytes.fromhex("3008a003810105810100")
WARNING_ONLY = bytes.fromhex("3006a00480020e10")
EMPTY = bytes.fromhex("3000")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (LOCKED, PasswordPolicyError.ACCOUNT_LOCKED),
        (EXPIRED_WITH_GRACE, PasswordPolicyError.PASSWORD_EXPIRED),
        (WARNING_ONLY, None),
        (EMPTY, None),
        (bytes.fromhex("3003810163"), 99),  # an error number we do not know
    ],
)
def test_ppolicy_response(value: bytes, expected: object) -> None:
    assert parse_ppolicy_error(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        bytes.fromhex("3103810101"),
        bytes.fromhex("300381"),
        bytes.fromhex("3003820101"),
        bytes.fromhex("30028100"),
        bytes.fromhex("3003810101ff"),
    ],
)
def test_malformed_ppolicy_response(value: bytes) -> None:
    with pytest.raises(ValueError):
        parse_ppolicy_error(value)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error,"
            " data 775, v4563",
            AdBindSubcode.ACCOUNT_LOCKED,
        ),
        (
            "80090308: LdapErr: DSID-0C090447, comment: AcceptSecurityContext error,"
            " data 52e, v3839",
            AdBindSubcode.INVALID_CREDENTIALS,
        ),
        ("... data 533, v893", AdBindSubcode.ACCOUNT_DISABLED),
        ("... data 9ab, v1", 0x9AB),
        ("", None),
        ("invalid credentials", None),
    ],
)
def test_ad_subcode(message: str, expected: object) -> None:
    assert parse_ad_subcode(message) == expected


def _result(code: int, message: str = "", control: bytes | None = None) -> dict[str, object]:
    result: dict[str, object] = {"result": code, "description": "x", "message": message}
    if control is not None:
        result["controls"] = {PPOLICY_CONTROL_OID: {"value": control, "criticality": False}}
    return result


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (_result(49), InvalidCredentialsError),
        (_result(49, control=WARNING_ONLY), InvalidCredentialsError),
        (_result(49, control=LOCKED), AccountLockedError),
        (_result(49, control=EXPIRED_WITH_GRACE), PasswordExpiredError),
        (_result(49, control=b"\x05garbage"), InvalidCredentialsError),
        (_result(49, "AcceptSecurityContext error, data 775, v4563"), AccountLockedError),
        (_result(49, "AcceptSecurityContext error, data 533, v4563"), AccountDisabledError),
        (_result(49, "AcceptSecurityContext error, data 701, v4563"), AccountExpiredError),
        (_result(49, "AcceptSecurityContext error, data 773, v4563"), PasswordExpiredError),
        (_result(49, "AcceptSecurityContext error, data 52e, v4563"), InvalidCredentialsError),
        (_result(49, "AcceptSecurityContext error, data 525, v4563"), InvalidCredentialsError),
        # Not a verdict on the password: deny, as the directory being in trouble.
        (_result(53), DirectoryUnavailableError),
        (_result(51), DirectoryUnavailableError),
    ],
)
def test_refusal_for(result: dict[str, object], expected: type[BrokerError]) -> None:
    error = refusal_for(result)
    assert type(error) is expected
    assert error.message


def test_a_bind_that_may_only_change_the_password_is_not_a_sign_in() -> None:
    change_after_reset = bytes.fromhex("3003810102")
    restricted = restriction_after_bind(_result(0, control=change_after_reset))
    assert isinstance(restricted, PasswordExpiredError)
    assert restriction_after_bind(_result(0)) is None
    assert restriction_after_bind(_result(0, control=WARNING_ONLY)) is None
