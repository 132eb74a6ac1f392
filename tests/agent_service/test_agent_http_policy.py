"""Host, Origin, CORS/PNA preflight and body checks, as pure functions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careid_agent.errors import (
    BadRequestError,
    BodyTooLargeError,
    HostNotAllowedError,
    InvalidChallengeError,
    OriginNotAllowedError,
)
from careid_agent.http_policy import (
    MAX_BODY_BYTES,
    RequestPolicy,
    check_body_length,
    parse_challenge,
    parse_json_object,
)

SSO = "https://sso.careid.example.nhs.uk"
POLICY = RequestPolicy(port=47600, allowed_origins=[SSO, "http://localhost:5000"])
#: base64url(bytes 0..31): a valid challenge whose last character carries 2 spare bits.
CHALLENGE = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


@pytest.mark.parametrize("host", ["127.0.0.1:47600", "localhost:47600", "LocalHost:47600"])
def test_the_agents_own_names_are_accepted(host: str) -> None:
    POLICY.check_host([host])


@pytest.mark.parametrize(
    "hosts",
    [
        [],
        ["127.0.0.1"],  # no port: not what a browser sends for :47600
        ["127.0.0.1:47601"],
        ["evil.example:47600"],  # DNS rebinding: the attacker's name, our address
        ["127.0.0.2:47600"],
        ["[::1]:47600"],  # the agent does not listen on IPv6
        ["127.0.0.1:47600", "127.0.0.1:47600"],
    ],
)
def test_any_other_host_is_refused(hosts: list[str]) -> None:
    with pytest.raises(HostNotAllowedError):
        POLICY.check_host(hosts)


def test_origins_match_exactly_and_alone() -> None:
    assert POLICY.check_origin([SSO]) == SSO
    assert POLICY.allowed_origin(["http://localhost:5000"]) == "http://localhost:5000"
    for origins in (
        [],
        ["null"],
        [SSO + "/"],
        [SSO.upper()],
        [SSO + ":443"],
        [SSO, SSO],
        ["http://localhost:5001"],
        ["https://sso.careid.example.nhs.uk.evil.example"],
    ):
        assert POLICY.allowed_origin(origins) is None, origins
        with pytest.raises(OriginNotAllowedError):
            POLICY.check_origin(origins)


def test_preflight_answers_private_network_access_only_when_asked() -> None:
    plain = dict(POLICY.preflight_headers(SSO, {"access-control-request-method": "POST"}))
    assert plain["Access-Control-Allow-Origin"] == SSO
    assert plain["Vary"] == "Origin"
    assert "POST" in plain["Access-Control-Allow-Methods"]
    assert plain["Access-Control-Allow-Headers"] == "Content-Type"
    assert "Access-Control-Allow-Private-Network" not in plain
    assert "Access-Control-Allow-Credentials" not in plain  # no cookies, ever
    pna = dict(POLICY.preflight_headers(SSO, {"access-control-request-private-network": "true"}))
    assert pna["Access-Control-Allow-Private-Network"] == "true"


def test_body_length() -> None:
    assert check_body_length([], []) == 0
    assert check_body_length(["57"], []) == 57
    assert check_body_length([str(MAX_BODY_BYTES)], []) == MAX_BODY_BYTES
    with pytest.raises(BodyTooLargeError):
        check_body_length([str(MAX_BODY_BYTES + 1)], [])
    # "²" and "١" pass str.isdigit() but are no Content-Length (int() refuses "²").
    for lengths in (["-1"], ["12abc"], ["1", "1"], [" "], ["²"], ["١٢"]):
        with pytest.raises(BadRequestError):
            check_body_length(lengths, [])
    with pytest.raises(BadRequestError, match="chunked"):
        check_body_length([], ["chunked"])


def test_json_bodies_are_strict() -> None:
    body = b'{"challenge": "%s"}' % CHALLENGE.encode()
    assert parse_challenge(body, "application/json") == CHALLENGE
    assert parse_challenge(body, "Application/JSON; charset=UTF-8") == CHALLENGE
    for content_type in (
        None,
        "text/plain",
        "application/json; charset=latin-1",
        "application/jsonp",
        "multipart/form-data",
    ):
        with pytest.raises(BadRequestError):
            parse_challenge(body, content_type)
    for bad in (
        b"",
        b"[]",
        b"null",
        b'{"challenge": "x", "challenge": "%s"}' % CHALLENGE.encode(),
        b'{"challenge": NaN}',
        b'{"challenge": "%s", "extra": 1}' % CHALLENGE.encode(),
        b"\xff\xfe{}",
        b"[" * MAX_BODY_BYTES,  # nesting deeper than the parser's recursion limit
    ):
        with pytest.raises(BadRequestError):
            parse_json_object(bad, "application/json", {"challenge"})


@pytest.mark.parametrize(
    "challenge",
    [
        CHALLENGE[:-1],
        CHALLENGE + "A",
        CHALLENGE[:-1] + "=",
        CHALLENGE[:-1] + "/",
        CHALLENGE[:-1] + "9",
        12,
        None,
        ["x"],
    ],
)
def test_challenges_must_be_43_base64url_characters(challenge: object) -> None:
    import json

    body = json.dumps({"challenge": challenge}).encode()
    with pytest.raises(InvalidChallengeError):
        parse_challenge(body, "application/json")


@settings(max_examples=200, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.integers(min_value=1, max_value=4000).map(lambda n: b"[" * n + b"]" * n),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_body_is_parsed_or_refused_as_bad_request(body: bytes) -> None:
    try:
        parse_json_object(body, "application/json", {"challenge"})
    except (BadRequestError, InvalidChallengeError):
        pass
