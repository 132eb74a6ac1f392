"""Every error code of every component: stable, unique, with a message a person can act on.

The `careid-auth:1` codes are the contract; the broker's and the devkit's own codes must
never take one of its values, or a third-party agent could mistake one for the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

import pytest

from careid_broker import codes as broker_codes
from careid_broker.codes import BrokerCode
from careid_devkit import codes as devkit_codes
from careid_devkit.codes import DevkitCode
from careid_protocol.errors import ErrorCode, message_for

REGISTRIES: list[tuple[type[StrEnum], Callable[..., str]]] = [
    (ErrorCode, message_for),
    (BrokerCode, broker_codes.message_for),
    (DevkitCode, devkit_codes.message_for),
]
ALL = [(code, describe) for enum, describe in REGISTRIES for code in enum]


@pytest.mark.parametrize(("code", "describe"), ALL, ids=lambda v: getattr(v, "value", ""))
def test_every_code_is_stable_snake_case_with_a_plain_message(
    code: StrEnum, describe: Callable[..., str]
) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", code.value)
    message = describe(code)
    # A sentence a person can act on: capitalised, ends with a full stop, no jargon codes.
    assert message[0].isupper() and message.endswith(".")
    assert code.value not in message


@pytest.mark.parametrize(("enum", "describe"), REGISTRIES)
def test_codes_are_unique_within_a_component(
    enum: type[StrEnum], describe: Callable[..., str]
) -> None:
    values = [c.value for c in enum]
    assert len(values) == len(set(values))


def test_no_component_reuses_a_contract_code() -> None:
    contract = {c.value for c in ErrorCode}
    assert not contract & {c.value for c in BrokerCode}
    assert not contract & {c.value for c in DevkitCode}


def test_the_broker_describes_the_contract_codes_it_answers_with_too() -> None:
    for code in ErrorCode:
        assert broker_codes.message_for(code) == message_for(code)
        assert devkit_codes.message_for(code) == message_for(code)


def test_one_status_per_code_and_400_unless_listed() -> None:
    assert broker_codes.status_for(ErrorCode.CERTIFICATE_REVOKED) == 403
    assert broker_codes.status_for(ErrorCode.REVOCATION_UNAVAILABLE) == 503
    assert broker_codes.status_for(BrokerCode.SIGNIN_THROTTLED) == 429
    assert broker_codes.status_for(BrokerCode.REGISTRATION_CARD_LINKED) == 409
    assert broker_codes.status_for(BrokerCode.SIGNIN_FORM_INCOMPLETE) == 400
    for code in [*ErrorCode, *BrokerCode]:
        assert 400 <= broker_codes.status_for(code) < 600
