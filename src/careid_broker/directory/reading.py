"""Directory entries to `MailAccount` and `CareIdentity`, through the attribute mapping.

Reading never raises on odd data: each unreadable value becomes a line in `problems`
(and the fact it would have given is left out or read as "not active"), so one bad entry
cannot break an administrator's search, and `check_account` still refuses it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from careid_broker.directory.connector import Entry
from careid_broker.directory.lookups import MAX_ENTRY_ID_LENGTH
from careid_broker.directory.mapping import AccountMapping, CareIdentityMapping
from careid_broker.directory.models import CareIdentity, MailAccount
from careid_broker.directory.values import TimeFormat, parse_roles, parse_time, split_values

log = logging.getLogger(__name__)


def _time(
    entry: Entry, attribute: str | None, time_format: TimeFormat, problems: list[str]
) -> datetime | None:
    text = entry.first(attribute)
    if text is None:
        return None
    try:
        return parse_time(text, time_format)
    except ValueError as exc:
        problems.append(f"{attribute}: {exc}")
        return None


def read_account(entry: Entry, mapping: AccountMapping) -> MailAccount:
    """A mail account from its entry."""
    problems: list[str] = []
    mail = entry.first(mapping.mail)
    if mail is None:
        problems.append(f"{mapping.mail} is missing")
    active, status_problem = mapping.status.evaluate(entry.get(mapping.status.attribute))
    if status_problem:
        problems.append(status_problem)
    expires = _time(entry, mapping.expiry, mapping.expiry_format, problems)
    aup_time = _time(entry, mapping.aup_time, mapping.aup_time_format, problems)
    entry_id = entry.first(mapping.entry_id)
    if entry_id is not None and len(entry_id) > MAX_ENTRY_ID_LENGTH:
        # Not this entry's identifier (a mapping mistake): never a `sub` decided on it.
        problems.append(f"{mapping.entry_id} is longer than {MAX_ENTRY_ID_LENGTH} characters")
        entry_id = None
    given_name = entry.first(mapping.given_name)
    surname = entry.first(mapping.surname)
    display_name = (
        entry.first(mapping.display_name)
        or " ".join(part for part in (given_name, surname) if part)
        or mail
        or entry.dn
    )
    account = MailAccount(
        dn=entry.dn,
        mail=mail or "",
        display_name=display_name,
        given_name=given_name,
        surname=surname,
        active=active,
        aup_version=entry.first(mapping.aup_version),
        aup_accepted_at=aup_time,
        org_code=entry.first(mapping.org_code),
        admin_org_codes=split_values(
            entry.get(mapping.admin_org_codes), mapping.admin_org_codes_separator
        ),
        expires=expires,
        care_identity_uuid=entry.first(mapping.care_identity_uuid),
        entry_id=entry_id,
        problems=tuple(problems),
    )
    if problems:
        log.warning("directory entry %s has unreadable values: %s", entry.dn, "; ".join(problems))
    return account


def read_care_identity(entry: Entry, mapping: CareIdentityMapping) -> CareIdentity:
    """A Care Identity record from its entry."""
    problems: list[str] = []
    uuid = entry.first(mapping.uuid)
    if uuid is None:
        problems.append(f"{mapping.uuid} is missing")
    status_values = entry.get(mapping.status.attribute)
    active, status_problem = mapping.status.evaluate(status_values)
    if status_problem:
        problems.append(status_problem)
    roles, role_problems = parse_roles(
        split_values(entry.get(mapping.roles), mapping.roles_separator),
        mapping.role_field_separator,
    )
    problems.extend(f"{mapping.roles}: {problem}" for problem in role_problems)
    if problems:
        log.warning("directory entry %s has unreadable values: %s", entry.dn, "; ".join(problems))
    return CareIdentity(
        dn=entry.dn,
        uuid=uuid or "",
        active=active and uuid is not None,
        status=status_values[0].strip() if status_values else None,
        roles=roles,
        problems=tuple(problems),
    )
