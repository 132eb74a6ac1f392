"""Directory value conversions: times, status flags, roles. Pure functions, no I/O.

OpenLDAP and Active Directory say the same things in different shapes: a time is an
RFC 4517 GeneralizedTime ("20240301093000Z") or a Windows FILETIME (100 ns ticks since
1601, with 0 and 2^63-1 meaning "never"); a disabled account is a status word or a bit in
`userAccountControl`. Every parser here raises `ValueError` on input it cannot read, so
the caller can record the problem and fail closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum, unique

from careid_broker.directory.models import Role


@unique
class TimeFormat(StrEnum):
    """How a directory attribute writes a point in time."""

    GENERALIZED_TIME = "generalized_time"
    FILETIME = "filetime"


# RFC 4517 §3.3.13: fractions may follow the hour, minute or second; we accept them only
# after the seconds (the form every directory we target writes) and ignore them.
_GENERALIZED_TIME = re.compile(
    r"(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})(?P<hour>\d{2})"
    r"(?:(?P<minute>\d{2})(?:(?P<second>\d{2})(?:[.,]\d+)?)?)?"
    r"(?:(?P<utc>Z)|(?P<sign>[+-])(?P<off_h>\d{2})(?P<off_m>\d{2})?)"
)

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
# AD writes both of these for "the account never expires".
FILETIME_NEVER = (0, 0x7FFFFFFFFFFFFFFF)


def parse_generalized_time(text: str) -> datetime:
    """A GeneralizedTime with an explicit zone ("Z" or "+hhmm") as an aware UTC datetime."""
    match = _GENERALIZED_TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a GeneralizedTime with a time zone: {text!r}")
    parts = match.groupdict()
    moment = datetime(
        int(parts["year"]),
        int(parts["month"]),
        int(parts["day"]),
        int(parts["hour"]),
        int(parts["minute"] or 0),
        int(parts["second"] or 0),
        tzinfo=UTC,
    )
    if parts["utc"] is None:
        hours, minutes = int(parts["off_h"]), int(parts["off_m"] or 0)
        # RFC 4517 §3.3.13: a differential's hour is 00-23 and its minute 00-59.
        if hours > 23 or minutes > 59:
            raise ValueError(f"GeneralizedTime with an impossible offset: {text!r}")
        offset = timedelta(hours=hours, minutes=minutes)
        try:
            moment = moment - offset if parts["sign"] == "+" else moment + offset
        except OverflowError:
            # 00010101000000+0100 (OpenLDAP takes it) is in year 0 in UTC, which no
            # datetime holds; the caller must hear ValueError, as for any unreadable time.
            raise ValueError(
                f"GeneralizedTime outside the years 1 to 9999 once in UTC: {text!r}"
            ) from None
    return moment


def format_generalized_time(moment: datetime) -> str:
    """An aware datetime as GeneralizedTime in UTC, to the second."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def parse_filetime(text: str) -> datetime | None:
    """A Windows FILETIME (decimal) as an aware UTC datetime; None for "never"."""
    try:
        ticks = int(text.strip())
    except ValueError:
        raise ValueError(f"not a FILETIME integer: {text!r}") from None
    if ticks < 0:
        raise ValueError(f"negative FILETIME: {text!r}")
    if ticks > FILETIME_NEVER[1]:
        # AD keeps a FILETIME in a signed 64-bit integer: a wider number is none, and
        # must not be read as "never" (the overflow below) for an account's expiry.
        raise ValueError(f"FILETIME wider than a signed 64-bit integer: {text!r}")
    if ticks in FILETIME_NEVER:
        return None
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        # Beyond year 9999: no account expires then in any sense that matters.
        return None


def format_filetime(moment: datetime) -> str:
    """An aware datetime as a Windows FILETIME (decimal)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant")
    delta = moment.astimezone(UTC) - _FILETIME_EPOCH
    ticks = (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    return str(ticks)


def parse_time(text: str, time_format: TimeFormat) -> datetime | None:
    """A time in the attribute's format; None only for FILETIME's "never"."""
    if time_format is TimeFormat.FILETIME:
        return parse_filetime(text)
    return parse_generalized_time(text)


def format_time(moment: datetime, time_format: TimeFormat) -> str:
    """A time written in the attribute's format."""
    if time_format is TimeFormat.FILETIME:
        return format_filetime(moment)
    return format_generalized_time(moment)


def parse_flags(text: str) -> int:
    """A flags integer as AD writes it (decimal, sometimes signed 32-bit)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    # userAccountControl is a 32-bit field that some tools print as a signed number.
    return value & 0xFFFFFFFF if value < 0 else value


def split_values(values: Iterable[str], separator: str | None) -> tuple[str, ...]:
    """Multi-valued data, also split inside each value when the directory packs them."""
    out: list[str] = []
    for value in values:
        pieces = value.split(separator) if separator else [value]
        out.extend(piece.strip() for piece in pieces if piece.strip())
    return tuple(out)


def parse_role(text: str, separator: str = "|") -> Role:
    """A role written "<code>|<name>|<orgCode>"; the name may itself hold the separator."""
    code, sep, rest = text.partition(separator)
    name, sep2, org_code = rest.rpartition(separator)
    if not sep or not sep2:
        raise ValueError(f"role needs code{separator}name{separator}orgCode: {text!r}")
    code, name, org_code = code.strip(), name.strip(), org_code.strip()
    if not code or not name or not org_code:
        raise ValueError(f"role has an empty field: {text!r}")
    return Role(code=code, name=name, org_code=org_code)


def parse_roles(values: Sequence[str], separator: str = "|") -> tuple[tuple[Role, ...], list[str]]:
    """Every readable role, and a problem line for each unreadable one (never raises)."""
    roles: list[Role] = []
    problems: list[str] = []
    for value in values:
        try:
            roles.append(parse_role(value, separator))
        except ValueError as exc:
            problems.append(str(exc))
    return tuple(roles), problems
