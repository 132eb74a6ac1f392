from __future__ import annotations

import re

import pytest

from careid_protocol.errors import ErrorCode, message_for


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_is_stable_snake_case_with_a_plain_message(code: ErrorCode) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", code.value)
    message = message_for(code)
    # A sentence a person can act on: capitalised, ends with a full stop, no jargon codes.
    assert message[0].isupper() and message.endswith(".")
    assert code.value not in message


def test_codes_are_unique() -> None:
    values = [c.value for c in ErrorCode]
    assert len(values) == len(set(values))
