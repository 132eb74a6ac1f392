"""Break-glass commands on the broker host: `registrations list|remove`, `audit verify|export`.

They act with the host's authority (every organisation) and are audited as
`cli:<login name>`. A removal does exactly what the console does — sessions end, relying
parties are told (queued in the outbox, delivered by the running broker if not here) —
so the broker app is built for it; listing and the audit commands need the store only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from careid_broker.admin.errors import (
    OutOfScopeError,
    RegistrationChangedError,
    RemovalReasonError,
)
from careid_broker.admin.export import registration_json, timestamp
from careid_broker.admin.reasons import Reason, RemovalReason, parse_reason
from careid_broker.admin.removal import (
    audit_refused_removal,
    registration_tag,
    remove_registration,
)
from careid_broker.admin.rights import Actor
from careid_broker.auditing import Auditor
from careid_broker.broker import build_broker
from careid_broker.card.revocation import CheckResult
from careid_broker.codes import BrokerCode, Code, message_for
from careid_broker.commands.database import EXIT_DATABASE, UNUSABLE_EXIT, require_database
from careid_broker.commands.parsing import documented
from careid_broker.config import BrokerConfig, BrokerConfigError, load_config
from careid_broker.errors import BrokerError
from careid_broker.settings import did_you_mean
from careid_broker.store import (
    AuditLog,
    ChainHead,
    RegistrationRecord,
    Registrations,
    SigninSessions,
    create_store,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def cli_actor_name() -> str:
    """`cli:<login name>`: who acts when a command is run on the broker host."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return f"cli:{who}"[:64]


def _cli_actor() -> Actor:
    return Actor(name=cli_actor_name(), org_codes=None, via="cli")


def command_config(args: argparse.Namespace) -> BrokerConfig | None:
    """The configuration, once its database is known to answer with a schema (every
    command here needs one; `DatabaseUnusableError` otherwise, and nothing created)."""
    try:
        config = load_config(args.config)
    except BrokerConfigError as exc:
        print(f"careid-broker: {message_for(exc.code)}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  problem: {problem}", file=sys.stderr)
        return None
    require_database(config.database.url)
    return config


def _fail(code: Code, detail: str | None = None, *, status: int = EXIT_FAILED) -> int:
    print(f"careid-broker: {code.value}: {message_for(code)}", file=sys.stderr)
    if detail:
        print(f"  {detail}", file=sys.stderr)
    return status


# registrations list


def _list(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    store = create_store(config.database.url)
    try:
        registrations = Registrations(store)
        orgs = [args.org] if args.org else None  # compared as ODS codes: in any case
        records: list[RegistrationRecord] = []
        last: RegistrationRecord | None = None
        while True:
            # By key, as the export pages: a removal meanwhile shifts no row out of sight.
            page = registrations.search(
                org_codes=orgs, card_uuid=args.uuid, after=last, limit=Registrations.MAX_PAGE
            )
            records.extend(page.items)
            if len(page.items) < Registrations.MAX_PAGE:
                break
            last = page.items[-1]
    finally:
        store.dispose()
    if args.json:
        json.dump([registration_json(r) for r in records], sys.stdout, indent=2)
        print()
        return EXIT_OK
    columns = ("card_uuid", "account_mail", "org_code", "link_mode", "registered_at", "how")
    print("\t".join(columns))
    for record in records:
        row = registration_json(record)
        print("\t".join(str(row[c]) for c in columns))
    print(f"# {len(records)} registration{'' if len(records) == 1 else 's'}", file=sys.stderr)
    return EXIT_OK


# registrations remove


def _remove(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    actor = _cli_actor()
    uuid = args.uuid.strip()
    try:
        reason = parse_reason(args.reason, args.detail)
    except RemovalReasonError as exc:
        _refuse(config, actor, uuid, exc.code)
        print(f"careid-broker: {exc.code.value}: {exc.detail}", file=sys.stderr)
        print(_reasons_help(args.reason), file=sys.stderr)
        return EXIT_CONFIG
    interactive = sys.stdin.isatty()
    if not (args.yes or args.dry_run or interactive):
        # Fail closed: a script that forgot --yes must not remove anyone.
        _refuse(config, actor, uuid, BrokerCode.ADMIN_CONFIRMATION_REQUIRED)
        return _fail(BrokerCode.ADMIN_CONFIRMATION_REQUIRED, status=EXIT_CONFIG)
    preview = _preview(config, uuid)
    if preview is not None:
        _show(preview, reason)
        if args.dry_run:
            print("dry run: nothing was removed")
            return EXIT_OK
        if not args.yes and not _confirmed():
            print("nothing was removed")
            return EXIT_FAILED
    elif args.dry_run:
        return _fail(BrokerCode.REGISTRATION_NOT_FOUND, f"Care Identity UUID {uuid!r}")
    # The same graph the web app builds, without Flask: the sessions end and the
    # relying parties' logouts are queued exactly as from the console.
    broker = build_broker(config)
    try:
        try:
            removal = remove_registration(
                broker.admin,
                actor,
                card_uuid=uuid,
                reason=reason,
                # What was shown is what is removed: if it changed meanwhile, nothing is.
                expected_mail=preview.registration.account_mail if preview else None,
                expected_registration=registration_tag(preview.registration) if preview else None,
            )
        except (OutOfScopeError, RegistrationChangedError) as exc:
            return _fail(exc.code, f"Care Identity UUID {uuid!r}")
    finally:
        # The delivery thread may have started to send the logouts now; whatever it has
        # not sent stays queued for the running broker.
        broker.stop()
    record = removal.registration
    print(f"removed: {record.card_uuid} linked to {record.account_mail} ({record.org_code})")
    print(f"reason: {removal.reason.describe()}")
    print(f"sessions ended: {len(removal.ended)}")
    told = ", ".join(removal.relying_parties) or "none"
    print(f"relying parties told (back-channel logout queued): {told}")
    return EXIT_OK


@dataclass(frozen=True, kw_only=True)
class _Preview:
    registration: RegistrationRecord
    sessions: int


def _preview(config: BrokerConfig, uuid: str) -> _Preview | None:
    """What a removal would take away, read without changing anything."""
    store = create_store(config.database.url)
    try:
        record = Registrations(store).by_uuid(uuid) if uuid else None
        if record is None:
            return None
        sessions = len(SigninSessions(store).active_for_account(record.account_mail))
    finally:
        store.dispose()
    return _Preview(registration=record, sessions=sessions)


def _show(preview: _Preview, reason: Reason) -> None:
    record = preview.registration
    print("This removes the smartcard registration:")
    print(f"  Care Identity UUID: {record.card_uuid}")
    print(f"  account: {record.account_mail} ({record.org_code})")
    print(f"  registered: {timestamp(record.registered_at)}")
    print(f"  reason: {reason.describe()}")
    print(
        f"  signed-in sessions that end now: {preview.sessions}"
        " (their services are told to sign them out)"
    )


def _confirmed() -> bool:
    print('Remove it? Type "yes" to remove, anything else to keep it: ', end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().casefold() in ("yes", "y")


def _reasons_help(given: str) -> str:
    suggestion = did_you_mean(given.strip(), [r.value for r in RemovalReason])
    lines = [f"  {suggestion.removeprefix('; ').capitalize()}"] if suggestion else []
    lines.append("  Give --reason as one of:")
    lines.extend(f"    {r.value:<18} {r.label}" for r in RemovalReason)
    lines.append('  and with --reason other, --detail "a description" (1-500 characters)')
    return "\n".join(lines)


def _refuse(config: BrokerConfig, actor: Actor, uuid: str, code: Code) -> None:
    """Audit a refused removal, as the service audits its own refusals."""
    store = create_store(config.database.url)
    try:
        audit_refused_removal(Auditor(AuditLog(store)), actor, uuid, code)
    except BrokerError as exc:
        # The refusal stands either way; the administrator learns it went unrecorded.
        print(f"careid-broker: the refusal could not be audited: {exc}", file=sys.stderr)
    finally:
        store.dispose()


# revocation check / refresh-crls


def _revocation_check(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    broker = build_broker(config)
    try:
        registration = broker.repos.registrations.by_uuid(args.uuid.strip())
        if registration is None:
            return _fail(BrokerCode.REGISTRATION_NOT_FOUND, f"Care Identity UUID {args.uuid!r}")
        outcome = broker.revocation_check.check(registration, actor=_cli_actor().name)
    finally:
        broker.stop()
    print(f"{registration.card_uuid} ({registration.account_mail}): {outcome.result.value}")
    if outcome.code:
        print(f"code: {outcome.code}")
    print(f"sessions ended: {outcome.sessions_ended}")
    return EXIT_OK if outcome.result in (CheckResult.GOOD, CheckResult.REVOKED) else EXIT_FAILED


def _refresh_crls(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    broker = build_broker(config)
    try:
        refreshed = broker.revocation_check.refresh_crls(actor=_cli_actor().name)
    finally:
        broker.stop()
    if refreshed is None:
        print("no [pki] section: card sign-in is off, so there are no CRLs to fetch")
        return EXIT_CONFIG
    for item in refreshed:
        crl = item.crl
        print(f"{crl.source.location} ({crl.source.named_by}):")
        if crl.ok and crl.next_update is not None:
            print(
                f"  fetched: issued by {crl.issuer_dn}, {len(crl.serials)} entries,"
                f" next update {crl.next_update:%Y-%m-%d %H:%M}Z;"
                f" sessions ended: {item.sessions_ended}"
            )
        else:
            print(f"  FAILED: {crl.problem}")
    failed = sum(1 for item in refreshed if not item.crl.ok)
    print(
        f"CRLs fetched and verified: {len(refreshed) - failed}; failed: {failed}"
        + ("" if refreshed else " (the configuration and the registered cards name none)")
    )
    print(
        "The running workers take up each CRL fetched here at their next check of its"
        " issuer (it is shared through the database); the sessions ended here end for"
        " every worker at once."
    )
    return EXIT_FAILED if failed else EXIT_OK


# audit verify / export


@contextmanager
def _audit_log(config: BrokerConfig) -> Iterator[AuditLog]:
    store = create_store(config.database.url)
    try:
        yield AuditLog(store)
    finally:
        store.dispose()


def _verify(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    with _audit_log(config) as log:
        result = log.verify_chain(anchor=args.anchor)
    if not result.ok:
        print(
            f"audit chain BROKEN at entry {result.first_broken_seq}: {result.reason}"
            f" ({result.checked} entries before it verified)"
        )
        return _fail(
            BrokerCode.AUDIT_CHAIN_BROKEN, f"first broken entry: seq {result.first_broken_seq}"
        )
    if result.head is None:
        print("audit chain OK: the log is empty")
    else:
        print(
            f"audit chain OK: {result.checked} entries; head {result.head.seq}:{result.head.hash}"
            " (record it elsewhere; pass it back as --anchor)"
        )
    return EXIT_OK


def parse_anchor(text: str) -> ChainHead:
    """`SEQ:HASH`, as printed by a successful verify (record it somewhere else)."""
    seq, _, digest = text.strip().partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(f"{text!r} is not SEQ:HASH (64 lower-case hex digits)")
    return ChainHead(seq=int(seq), hash=digest)


def parse_since(text: str) -> datetime:
    """`2026-11-01` or an ISO 8601 time; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _export(args: argparse.Namespace) -> int:
    config = command_config(args)
    if config is None:
        return EXIT_CONFIG
    out: TextIO
    with _audit_log(config) as log:
        if args.output is not None:
            try:
                out = args.output.open("w", encoding="utf-8")
            except OSError as exc:
                print(
                    f"careid-broker: audit export: cannot write {args.output}: {exc.strerror}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            with out:
                count = _write_lines(log, args.since, out)
        else:
            count = _write_lines(log, args.since, sys.stdout)
    since = f" since {timestamp(args.since)}" if args.since else ""
    print(f"# exported {count} audit entries{since}", file=sys.stderr)
    return EXIT_OK


def _write_lines(log: AuditLog, since: datetime | None, out: TextIO) -> int:
    count = 0
    for entry in log.export(since=since):
        out.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


_CONFIG_EXIT = "the configuration is not valid (check-config names each problem)"


def register(sub: Any) -> None:
    """Add the `registrations`, `revocation` and `audit` command groups to the broker's CLI."""
    registrations = sub.add_parser(
        "registrations",
        help="smartcard registrations (break-glass)",
        **documented(
            "List or remove smartcard registrations with the broker host's authority"
            " (every organisation), audited as cli:<login name>.",
            {EXIT_CONFIG: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    reg_actions = registrations.add_subparsers(
        dest="registrations_command", required=True, metavar="ACTION"
    )
    listing = reg_actions.add_parser(
        "list",
        help="list registrations",
        **documented(
            "List registrations as a table (or JSON): Care Identity UUID, account,"
            " organisation, link mode, when and how registered.",
            {
                EXIT_OK: "listed (possibly none)",
                EXIT_CONFIG: _CONFIG_EXIT,
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    listing.add_argument("--org", help="only this organisation (ODS code)")
    listing.add_argument("--uuid", help="only this Care Identity UUID")
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    listing.set_defaults(func=_list)
    removing = reg_actions.add_parser(
        "remove",
        help="remove a registration: sessions end, relying parties are told",
        **documented(
            "Remove a card's registration, as the console does: the person's signed-in"
            " sessions end, their services are told by back-channel logout, the removal"
            " is audited, and the person can register again. It shows what it will remove"
            " and asks for confirmation at a terminal; --yes confirms in advance (scripts),"
            " --dry-run shows what would happen and changes nothing.",
            {
                EXIT_OK: "removed (with --dry-run: it would be removed)",
                EXIT_FAILED: "nothing removed: no such registration, it changed meanwhile,"
                " or the confirmation was declined",
                EXIT_CONFIG: "nothing removed: the reason is not one of the list (or"
                " 'other' has no --detail), there is no terminal to confirm on and no"
                " --yes, or the configuration is not valid",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    removing.add_argument("--uuid", required=True, help="the Care Identity UUID")
    removing.add_argument(
        "--reason",
        required=True,
        metavar="REASON",
        help="one of: " + ", ".join(r.value for r in RemovalReason) + " (other needs --detail)",
    )
    removing.add_argument("--detail", help="with --reason other: the description (1-500 chars)")
    confirming = removing.add_mutually_exclusive_group()
    confirming.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (for scripts)"
    )
    confirming.add_argument(
        "--dry-run", action="store_true", help="show what would be removed; change nothing"
    )
    removing.set_defaults(func=_remove)

    revocation = sub.add_parser(
        "revocation",
        help="card certificate revocation, now",
        **documented(
            "Ask a registered card's issuer now whether it is revoked, or fetch the CRLs"
            " afresh; a revoked card's sessions end at once.",
            {EXIT_CONFIG: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    revocation_actions = revocation.add_subparsers(
        dest="revocation_command", required=True, metavar="ACTION"
    )
    checking = revocation_actions.add_parser(
        "check",
        help="ask now whether a registered card is revoked; if so its sessions end",
        **documented(
            "Ask the card's issuer afresh (no cached answer) whether the registered"
            " card's certificate is revoked; if it is, the person's sessions end, with"
            " back-channel logout. Audited.",
            {
                EXIT_OK: "an answer: good, or revoked (and the sessions ended)",
                EXIT_FAILED: "no answer now (issuer unreachable, certificate not kept,"
                " no [pki]), or no such registration",
                EXIT_CONFIG: _CONFIG_EXIT,
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    checking.add_argument("--uuid", required=True, help="the Care Identity UUID")
    checking.set_defaults(func=_revocation_check)
    revocation_actions.add_parser(
        "refresh-crls",
        help="fetch and verify every CRL; cards they list lose their sessions",
        **documented(
            "Fetch and verify every CRL the configuration names ([pki.crl] files, the"
            " distribution points of the registered cards' and the CA certificates) and"
            " print each one; registered cards a CRL lists lose their sessions at once,"
            " for every worker. Each CRL fetched is shared through the database: every"
            " running worker and instance takes it up at its next check of that issuer,"
            " verifying it again. Audited.",
            {
                EXIT_OK: "every CRL fetched and verified",
                EXIT_FAILED: "a CRL could not be fetched, verified, or is out of date",
                EXIT_CONFIG: _CONFIG_EXIT + " (or no [pki])",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    ).set_defaults(func=_refresh_crls)

    audit = sub.add_parser(
        "audit",
        help="the hash-chained audit log",
        **documented(
            "Verify the audit log's hash chain, or export its entries.",
            {EXIT_CONFIG: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    audit_actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_actions.add_parser(
        "verify",
        help="walk the hash chain; exit 1 naming the first broken entry",
        **documented(
            "Walk the audit log's hash chain from the first entry. A successful run"
            " prints the head as SEQ:HASH: record it elsewhere and pass it back as"
            " --anchor, which also catches a rewritten or cut chain.",
            {
                EXIT_OK: "the chain verified",
                EXIT_FAILED: "the chain is broken (the first broken entry is named)",
                EXIT_CONFIG: _CONFIG_EXIT + ", or --anchor is not SEQ:HASH",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    verify.add_argument(
        "--anchor",
        type=parse_anchor,
        help="SEQ:HASH of a head recorded earlier: also catches a rewritten or cut chain",
    )
    verify.set_defaults(func=_verify)
    exporting = audit_actions.add_parser(
        "export",
        help="write entries as JSON lines",
        **documented(
            "Write audit entries as JSON lines (with their hashes), to standard output or a file.",
            {
                EXIT_OK: "exported (the count is printed on stderr)",
                EXIT_FAILED: "the --output file cannot be written",
                EXIT_CONFIG: _CONFIG_EXIT + ", or --since is not a date or time",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    exporting.add_argument(
        "--since", type=parse_since, help="from this date or time on (UTC unless given)"
    )
    exporting.add_argument("--output", type=Path, help="write to this file (default: stdout)")
    exporting.set_defaults(func=_export)


__all__ = ["register"]
