"""Bounded JSON bodies: size and nesting refused before parsing, the rest parsed strictly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careid_protocol.json_body import (
    HostileBodyError,
    JsonBodyError,
    loads_bounded,
    nesting_depth,
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="[]{}\"\\ab,:'\n"),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(JSON_VALUES)
def test_the_depth_scan_agrees_with_the_parsed_structure(value: object) -> None:
    # Brackets, quotes and backslashes inside strings never count.
    assert nesting_depth(json.dumps(value)) == _depth(value)


def test_deep_nesting_is_refused_before_parsing() -> None:
    with pytest.raises(HostileBodyError, match="nested 5000 deep"):
        loads_bounded(b"[" * 5000 + b"]" * 5000, max_bytes=20_000)
    assert loads_bounded(b"[" * 16 + b"]" * 16, max_bytes=100) is not None


def test_a_large_body_is_refused_unread() -> None:
    with pytest.raises(HostileBodyError, match="at most 10"):
        loads_bounded(b'{"a": "0123456789"}', max_bytes=10)


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1, "a": 2}', b"[NaN]", b"[Infinity]", b"\xff\xfe", b"{", b""],
)
def test_duplicates_constants_and_broken_text_are_not_json(body: bytes) -> None:
    with pytest.raises(JsonBodyError) as caught:
        loads_bounded(body, max_bytes=100)
    assert not isinstance(caught.value, HostileBodyError)
