"""Registrations as CSV (console export) and as JSON (API, CLI)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from careid_broker.store import RegistrationRecord

CSV_COLUMNS = (
    "card_uuid",
    "account_mail",
    "org_code",
    "link_mode",
    "cert_issuer_dn",
    "cert_serial",
    "cert_fingerprint",
    "registered_at",
    "how",
)
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection):
# an issuer DN or a mail address is outside our control, so such cells get a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def registration_json(record: RegistrationRecord) -> dict[str, Any]:
    """The API's (and `registrations list --json`'s) form of a registration."""
    return {
        "card_uuid": record.card_uuid,
        "account_mail": record.account_mail,
        "org_code": record.org_code,
        "link_mode": record.link_mode.value,
        "cert_issuer_dn": record.cert_issuer_dn,
        "cert_serial": record.cert_serial,
        "cert_fingerprint": record.cert_fingerprint,
        "registered_at": timestamp(record.registered_at),
        "how": record.how,
    }


def _safe_cell(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def csv_lines(records: Iterable[RegistrationRecord]) -> Iterator[str]:
    """The CSV text, one line at a time (header first), for a streamed download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for record in records:
        row = registration_json(record)
        writer.writerow([_safe_cell(str(row[column])) for column in CSV_COLUMNS])
        yield flush()
