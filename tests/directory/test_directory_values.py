"""Value conversions: GeneralizedTime, Windows FILETIME, flags, roles (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careid_broker.directory import Role, StatusKind, StatusRule
from careid_broker.directory.values import (
    TimeFormat,
    format_filetime,
    format_generalized_time,
    parse_filetime,
    parse_flags,
    parse_generalized_time,
    parse_role,
    parse_roles,
    parse_time,
    split_values,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240301093000Z", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
        ("20240301093000.0Z", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),  # AD's form
        ("202403010930Z", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
        ("2024030109Z", datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),
        ("20240301103000+0100", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
        ("20240301083000-01", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
        ("20991231235959Z", datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_generalized_time(text: str, expected: datetime) -> None:
    assert parse_generalized_time(text) == expected
    assert parse_time(text, TimeFormat.GENERALIZED_TIME) == expected


@pytest.mark.parametrize(
    "text",
    ["", "2024", "20240301093000", "20241301093000Z", "20240230093000Z", "yesterday", "1e10Z"],
)
def test_generalized_time_rejects_malformed_or_zoneless(text: str) -> None:
    with pytest.raises(ValueError):
        parse_generalized_time(text)


@pytest.mark.parametrize(
    "text",
    [
        "00010101000000+0100",  # 31 December of year 0 in UTC
        "00010101000000+01",
        "00010101005959+0100",
        "99991231235959-0100",  # 1 January 10000 in UTC
        "99991231235900-0001",
    ],
)
def test_generalized_time_outside_the_calendar_once_in_utc_is_refused(text: str) -> None:
    # OpenLDAP takes these; in UTC they fall before year 1 or after 9999, which no
    # datetime holds. Refused with ValueError, so reading an entry makes it a problem.
    with pytest.raises(ValueError, match="years 1 to 9999"):
        parse_generalized_time(text)
    with pytest.raises(ValueError, match="years 1 to 9999"):
        parse_time(text, TimeFormat.GENERALIZED_TIME)
    # The calendar's last and first moments themselves are read.
    assert parse_generalized_time("00010101010000+0100") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_generalized_time("99991231225959-0100") == datetime(
        9999, 12, 31, 23, 59, 59, tzinfo=UTC
    )


@pytest.mark.parametrize("text", ["20240301093000+2400", "20240301093000+0060", "2024030109-99"])
def test_generalized_time_refuses_an_offset_no_time_zone_has(text: str) -> None:
    # RFC 4517 §3.3.13: the differential is hours 00-23 and minutes 00-59.
    with pytest.raises(ValueError, match="offset"):
        parse_generalized_time(text)


def test_generalized_time_is_written_in_utc() -> None:
    moment = datetime(2024, 3, 1, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))
    assert format_generalized_time(moment) == "20240301093015Z"
    with pytest.raises(ValueError):
        format_generalized_time(datetime(2024, 3, 1))  # naive on purpose


# Reference values computed independently: FILETIME counts 100 ns ticks from 1601-01-01.
# 116444736000000000 is the Unix epoch, the constant every Windows interop library uses.
@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        ("116444736000000000", datetime(1970, 1, 1, tzinfo=UTC)),
        ("133537590000000000", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),  # 1709285400 s
        ("1", datetime(1601, 1, 1, tzinfo=UTC)),
    ],
)
def test_filetime(ticks: str, expected: datetime) -> None:
    assert parse_filetime(ticks) == expected
    assert parse_time(ticks, TimeFormat.FILETIME) == expected


@pytest.mark.parametrize("never", ["0", "9223372036854775807", " 0 "])
def test_filetime_never(never: str) -> None:
    assert parse_filetime(never) is None


def test_filetime_beyond_year_9999_is_never() -> None:
    assert parse_filetime("9223372036854775806") is None


@pytest.mark.parametrize("ticks", ["9223372036854775808", "18446744073709551615", "9" * 40])
def test_filetime_wider_than_64_bits_is_refused_not_never(ticks: str) -> None:
    # AD keeps a FILETIME in a signed 64-bit integer: a wider number is not one, and
    # for accountExpires "never" would be the reading that lets the account in.
    with pytest.raises(ValueError, match="64-bit"):
        parse_filetime(ticks)


@pytest.mark.parametrize("text", ["", "-5", "abc", "1.5", "20240301093000Z"])
def test_filetime_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_filetime(text)


@given(st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(9000, 1, 1)))
def test_filetime_round_trip(moment: datetime) -> None:
    aware = moment.replace(tzinfo=UTC)
    assert parse_filetime(format_filetime(aware)) == aware


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 1, 1)))
def test_generalized_time_round_trip(moment: datetime) -> None:
    aware = moment.replace(tzinfo=UTC, microsecond=0)
    assert parse_generalized_time(format_generalized_time(aware)) == aware


AD_STATUS = StatusRule(attribute="userAccountControl", kind=StatusKind.BITFLAG, disabled_mask=0x2)


@pytest.mark.parametrize(
    ("values", "active"),
    [
        (["512"], True),  # NORMAL_ACCOUNT
        (["514"], False),  # NORMAL_ACCOUNT | ACCOUNTDISABLE
        (["66048"], True),  # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
        (["66050"], False),
        (["-2147483134"], False),  # a signed rendering with bit 0x2 set
    ],
)
def test_ad_user_account_control(values: list[str], active: bool) -> None:
    assert AD_STATUS.evaluate(values) == (active, None)


def test_unreadable_or_missing_status_is_not_active_and_a_problem() -> None:
    for rule, values in [(AD_STATUS, ["x"]), (AD_STATUS, []), (StatusRule(attribute="s"), [])]:
        active, problem = rule.evaluate(values)
        assert active is False and problem


def test_status_words() -> None:
    rule = StatusRule(attribute="careidAccountStatus")
    assert rule.evaluate(["active"]) == (True, None)
    assert rule.evaluate(["ACTIVE "]) == (True, None)
    assert rule.evaluate(["disabled"]) == (False, None)
    active, problem = rule.evaluate(["suspended"])
    assert not active and problem and "suspended" in problem


def test_parse_flags() -> None:
    assert parse_flags("514") == 514
    assert parse_flags("-1") == 0xFFFFFFFF
    with pytest.raises(ValueError):
        parse_flags("0x2")


def test_roles() -> None:
    assert parse_role("R8000|Clinical Practitioner|RX1") == Role(
        code="R8000", name="Clinical Practitioner", org_code="RX1"
    )
    # A name holding the separator keeps it; code and organisation are the outer fields.
    assert parse_role("R1|A|B|Y00001").name == "A|B"
    roles, problems = parse_roles(["R1|Nurse|RX1", "broken", "R2||RX1", "|x|RX1", "R3|x|"])
    assert roles == (Role(code="R1", name="Nurse", org_code="RX1"),)
    assert len(problems) == 4


def test_split_values() -> None:
    assert split_values(["RX1, RX2", "Y00001"], ",") == ("RX1", "RX2", "Y00001")
    assert split_values(["RX1, RX2"], None) == ("RX1, RX2",)
    assert split_values(["", " "], ",") == ()
