"""`careid-broker subjects backfill-entry-ids`: give pre-0013 `sub`s, and pre-0014
smartcard registrations, their directory entry.

A relying party's `sub` follows the directory entry (`accounts.entry_id`, revision
0013). A `sub` made before that keeps only the address, and takes an entry's identifier
at its next sign-in: if the address is given to someone new first, that person would
take it over. Run once after the upgrade, this reads the entry holding each such address
now and keeps its identifier when the entry is still at the DN the `sub` was last seen
at. An address now on an entry under another DN (renamed or moved, or given to someone
else) or on none is listed for an administrator to decide; `--moved` and `--unheld`
carry out that decision. Audited as `cli:<login name>`.

A registration made before revision 0014 is held to the DN it was registered at until
its card next signs in, which records the entry's identifier: an entry renamed or moved
before then would be refused. So the same run records the identifier of the entry at
each such registration's DN, and lists the others (`--moved record` records the entry
holding the address now, for people renamed or moved; otherwise their next card
sign-in, or an administrator's removal, decides). A registration is never removed here.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from careid_broker.auditing import Auditor
from careid_broker.commands.admin import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    cli_actor_name,
    command_config,
)
from careid_broker.commands.database import EXIT_DATABASE, UNUSABLE_EXIT
from careid_broker.commands.parsing import documented
from careid_broker.directory.ldap import LdapDirectory
from careid_broker.errors import DirectoryDataError, DirectoryUnavailableError
from careid_broker.store import (
    AuditLog,
    Outcome,
    RegistrationRecord,
    Registrations,
    SubjectRow,
    Subjects,
    create_store,
)

EVENT_BACKFILLED = "subjects.entry_ids_backfilled"
EVENT_RETIRED = "subject.retired"
_PAGE = 500


class Decision(StrEnum):
    """What to do with a `sub` whose entry cannot be told for sure."""

    LEAVE = "leave"
    """Keep it as it is: its next sign-in decides, as before this command."""
    RECORD = "record"
    """The entry holding the address now is the same person renamed or moved: keep its id."""
    RETIRE = "retire"
    """Retire the `sub`: whoever holds the address next gets a new one."""


@dataclass(kw_only=True)
class _Tally:
    recorded: int = 0
    retired: int = 0
    moved: list[tuple[SubjectRow, str]] = field(default_factory=list)
    unheld: list[SubjectRow] = field(default_factory=list)
    several: list[SubjectRow] = field(default_factory=list)
    without_id: list[SubjectRow] = field(default_factory=list)

    registrations_recorded: int = 0
    registrations_left: list[tuple[RegistrationRecord, str]] = field(default_factory=list)
    """Registrations not recorded: with what holds (or does not hold) the address now."""

    def counts(self) -> dict[str, int]:
        return {
            "recorded": self.recorded,
            "retired": self.retired,
            "moved": len(self.moved),
            "unheld": len(self.unheld),
            "several_entries": len(self.several),
            "entry_without_id": len(self.without_id),
            "registrations_recorded": self.registrations_recorded,
            "registrations_left": len(self.registrations_left),
        }


def _backfill(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    if not config.directory.mapping.accounts.entry_id:
        print(
            "careid-broker: [directory.mapping.accounts] entry_id is empty: the directory"
            " keeps no entry identifier, so there is none to record",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    moved, unheld = Decision(args.moved), Decision(args.unheld)
    store = create_store(config.database.url)
    directory = LdapDirectory(config.directory)
    subjects = Subjects(store)
    audit = Auditor(AuditLog(store))
    actor = cli_actor_name()
    tally = _Tally()
    status = EXIT_OK
    try:
        after: str | None = None
        while True:
            page = subjects.without_entry_id(after=after, limit=_PAGE)
            for row in page:
                _one(
                    row,
                    directory,
                    subjects,
                    audit,
                    actor,
                    tally,
                    moved=moved,
                    unheld=unheld,
                    dry_run=args.dry_run,
                )
            if len(page) < _PAGE:
                break
            after = page[-1].sub
        registrations = Registrations(store)
        after_id = 0
        while True:
            held = registrations.without_entry_id(after=after_id, limit=_PAGE)
            for registration in held:
                _registration(
                    registration,
                    directory,
                    registrations,
                    tally,
                    moved=moved,
                    dry_run=args.dry_run,
                )
            if len(held) < _PAGE:
                break
            after_id = held[-1].id
    except DirectoryUnavailableError as exc:
        print(f"careid-broker: the directory stopped answering: {exc}", file=sys.stderr)
        print("  what was done so far stays; run the command again", file=sys.stderr)
        status = EXIT_FAILED
    finally:
        try:
            if not args.dry_run:
                details: dict[str, Any] = {
                    **tally.counts(),
                    "moved_decision": moved.value,
                    "unheld_decision": unheld.value,
                }
                audit(
                    EVENT_BACKFILLED,
                    outcome=Outcome.SUCCESS if status == EXIT_OK else Outcome.FAILURE,
                    actor=actor,
                    details=details,
                )
        finally:
            directory.close()
            store.dispose()
    _report(tally, dry_run=args.dry_run, moved=moved, unheld=unheld)
    return status


class _Found(StrEnum):
    """What holds an address now, against the DN it was last seen at."""

    SAME = "same"  # an entry at that DN, with an identifier
    MOVED = "moved"  # an entry under another DN, with an identifier
    UNHELD = "unheld"
    SEVERAL = "several"
    WITHOUT_ID = "without_id"


def _holder(directory: LdapDirectory, mail: str, dn: str) -> tuple[_Found, str, str]:
    """How the entry holding `mail` now stands against `dn`; its DN and identifier
    (both "" unless SAME or MOVED)."""
    try:
        account = directory.find_account(mail)
    except DirectoryDataError:
        return _Found.SEVERAL, "", ""  # two entries claim the address: nobody's to record
    if account is None:
        return _Found.UNHELD, "", ""
    if account.entry_id is None:
        return _Found.WITHOUT_ID, "", ""
    moved = account.dn.casefold() != dn.casefold()
    return (_Found.MOVED if moved else _Found.SAME), account.dn, account.entry_id


def _one(
    row: SubjectRow,
    directory: LdapDirectory,
    subjects: Subjects,
    audit: Auditor,
    actor: str,
    tally: _Tally,
    *,
    moved: Decision,
    unheld: Decision,
    dry_run: bool,
) -> None:
    found, now_dn, entry_id = _holder(directory, row.account_mail, row.account_dn)
    if found is _Found.SEVERAL:
        tally.several.append(row)
        return
    if found is _Found.UNHELD:
        tally.unheld.append(row)
        if unheld is Decision.RETIRE:
            _retire(row, subjects, audit, actor, tally, why="unheld", dry_run=dry_run)
        return
    if found is _Found.WITHOUT_ID:
        tally.without_id.append(row)
        return
    if found is _Found.MOVED:
        tally.moved.append((row, now_dn))
        if moved is Decision.RETIRE:
            _retire(row, subjects, audit, actor, tally, why="moved", dry_run=dry_run)
            return
        if moved is not Decision.RECORD:
            return
    if dry_run or subjects.record_entry_id(row, entry_id):
        tally.recorded += 1


_LEFT_BECAUSE = {
    _Found.SEVERAL: "more than one entry holds it",
    _Found.UNHELD: "no entry holds the address",
    _Found.WITHOUT_ID: "the entry has no entry_id value",
}


def _registration(
    registration: RegistrationRecord,
    directory: LdapDirectory,
    registrations: Registrations,
    tally: _Tally,
    *,
    moved: Decision,
    dry_run: bool,
) -> None:
    found, now_dn, entry_id = _holder(directory, registration.account_mail, registration.account_dn)
    if found in _LEFT_BECAUSE:
        tally.registrations_left.append((registration, _LEFT_BECAUSE[found]))
        return
    if found is _Found.MOVED and moved is not Decision.RECORD:
        tally.registrations_left.append((registration, f"now {now_dn}"))
        return
    # Only while it is still that registration, at the DN it was read with, and has no
    # identifier: a removal or a card sign-in meanwhile decides instead.
    if dry_run or registrations.record_entry_id(registration, entry_id):
        tally.registrations_recorded += 1


def _retire(
    row: SubjectRow,
    subjects: Subjects,
    audit: Auditor,
    actor: str,
    tally: _Tally,
    *,
    why: str,
    dry_run: bool,
) -> None:
    if dry_run:
        tally.retired += 1
        return
    if subjects.retire(row):
        tally.retired += 1
        audit(
            EVENT_RETIRED,
            outcome=Outcome.SUCCESS,
            actor=actor,
            subject=row.account_mail,
            details={"previous_sub": row.sub, "account_dn": row.account_dn, "why": why},
        )


def _report(tally: _Tally, *, dry_run: bool, moved: Decision, unheld: Decision) -> None:
    would = "would be " if dry_run else ""
    for row, now_dn in tally.moved:
        print(f"moved\t{row.account_mail}\twas {row.account_dn}\tnow {now_dn}")
    for row in tally.unheld:
        print(f"unheld\t{row.account_mail}\twas {row.account_dn}\tno entry holds the address")
    for row in tally.several:
        print(f"several\t{row.account_mail}\twas {row.account_dn}\tmore than one entry holds it")
    for row in tally.without_id:
        print(f"no-id\t{row.account_mail}\t{row.account_dn}\tthe entry has no entry_id value")
    for registration, now in tally.registrations_left:
        print(
            f"registration\t{registration.account_mail}\tcard {registration.card_uuid}"
            f"\twas {registration.account_dn}\t{now}"
        )
    print(f"entry identifiers {would}recorded: {tally.recorded}")
    print(f"registrations' entry identifiers {would}recorded: {tally.registrations_recorded}")
    print(f"subjects {would}retired: {tally.retired}")
    left = []
    if tally.moved and moved is Decision.LEAVE:
        left.append(
            f"{len(tally.moved)} on an entry under another DN (renamed or moved: --moved record;"
            " given to someone else: --moved retire)"
        )
    if tally.unheld and unheld is Decision.LEAVE:
        left.append(
            f"{len(tally.unheld)} whose address no entry holds (--unheld retire, so that"
            " whoever is given it next gets a new sub)"
        )
    if tally.several:
        left.append(f"{len(tally.several)} whose address more than one entry holds")
    if tally.without_id:
        left.append(
            f"{len(tally.without_id)} whose entry has no entry_id value (check the mapping)"
        )
    for line in left:
        print(f"left as they are (their next sign-in decides): {line}")
    if tally.registrations_left:
        print(
            f"registrations left as they are: {len(tally.registrations_left)} (their card's"
            " next sign-in decides, by the DN registered; --moved record takes the entry"
            " holding the address now, for people renamed or moved)"
        )


def register(sub: Any) -> None:
    """Add the `subjects` command group to the broker's CLI."""
    subjects = sub.add_parser(
        "subjects",
        help="relying parties' subject identifiers (sub)",
        **documented(
            "Work on the sub identifiers the broker gives relying parties.",
            {EXIT_CONFIG: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    actions = subjects.add_subparsers(dest="subjects_command", required=True, metavar="ACTION")
    backfill = actions.add_parser(
        "backfill-entry-ids",
        help="give subs made before upgrade 0013 their directory entry's identifier",
        **documented(
            "For every sub that keeps no directory entry identifier (made before upgrade"
            " 0013), read the entry holding its address now; when that entry is at the DN"
            " the sub was last seen at, keep the entry's identifier, so that the address"
            " given to someone new later gets a new sub. Addresses now on an entry under"
            " another DN, or on none, are listed, and left for their next sign-in unless"
            " --moved or --unheld says otherwise. Smartcard registrations made before"
            " upgrade 0014 likewise keep the identifier of the entry at their registered"
            " DN (with --moved record, of the entry holding the address now); the others"
            " are listed. Audited as cli:<login name>.",
            {
                EXIT_OK: "done (the lines above list what was left)",
                EXIT_FAILED: "the directory stopped answering; what was done stays",
                EXIT_CONFIG: "the configuration is not valid, or its mapping reads no entry_id",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    backfill.add_argument(
        "--moved",
        choices=[d.value for d in Decision],
        default=Decision.LEAVE.value,
        help="an address now on an entry under another DN: leave it (default), record"
        " that entry (the same person renamed or moved) or retire the sub (someone else)",
    )
    backfill.add_argument(
        "--unheld",
        choices=[Decision.LEAVE.value, Decision.RETIRE.value],
        default=Decision.LEAVE.value,
        help="an address no entry holds: leave it (default) or retire the sub",
    )
    backfill.add_argument(
        "--dry-run", action="store_true", help="read and report; change nothing, audit nothing"
    )
    backfill.set_defaults(func=_backfill)


__all__ = ["register"]
