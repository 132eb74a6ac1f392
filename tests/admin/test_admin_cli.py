"""Break-glass commands: `careid-broker registrations list|remove`, `audit verify|export`.

Run in-process through `careid_broker.cli.main` against the same database as a test
app, with a real broker.toml.
"""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from admin_support import ALEX, KIM, LEE, UUIDS, register, sign_in
from broker_support import broker_of
from flask import Flask
from oidc_support import Browser, TestRelyingParty
from sqlalchemy import create_engine, text

from careid_broker.cli import main
from careid_broker.store import EndReason, Outcome
from support.clock import FakeClock


def _run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    status = main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return status, out, err


def _tamper(store_url: str, statement: str) -> None:
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_audit_verify_finds_a_tampered_row_and_names_it(
    admin_app: Flask, cli_config: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for person in (ALEX, LEE, KIM):
        sign_in(admin_app.test_client(), person)
    status, out, _ = _run(capsys, cli_config, "audit", "verify")
    assert status == 0 and "audit chain OK: 3 entries" in out
    head = re.search(r"head (3:[0-9a-f]{64})", out)
    assert head is not None
    status, _, _ = _run(capsys, cli_config, "audit", "verify", "--anchor", head.group(1))
    assert status == 0
    status, out, _ = _run(capsys, cli_config, "audit", "verify", "--anchor", "3:" + "0" * 64)
    assert status == 1 and "BROKEN at entry 3" in out and "anchor" in out
    # Someone with database access rewrites who signed in at entry 2.
    _tamper(store_url, "UPDATE audit_log SET actor = 'someone.else@nhs.net' WHERE seq = 2")
    status, out, err = _run(capsys, cli_config, "audit", "verify")
    assert status == 1
    assert "BROKEN at entry 2" in out and "do not match its hash" in out
    assert "audit_chain_broken" in err and "seq 2" in err


def test_audit_verify_finds_a_deleted_row(
    admin_app: Flask, cli_config: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for person in (ALEX, LEE, KIM):
        sign_in(admin_app.test_client(), person)
    _tamper(store_url, "DELETE FROM audit_log WHERE seq = 2")
    status, out, _ = _run(capsys, cli_config, "audit", "verify")
    assert status == 1 and "BROKEN at entry 2" in out and "missing" in out


def test_audit_verify_reports_a_garbled_row_as_broken(
    admin_app: Flask, cli_config: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for person in (ALEX, LEE, KIM):
        sign_in(admin_app.test_client(), person)
    garbled = ["""UPDATE audit_log SET details = '{"n": 1e999}' WHERE seq = 2"""]
    if store_url.startswith("sqlite"):  # PostgreSQL's types refuse these themselves
        garbled += [
            "UPDATE audit_log SET details = '{not json' WHERE seq = 2",
            "UPDATE audit_log SET at = 'garbage' WHERE seq = 2",
        ]
    for statement in garbled:
        _tamper(store_url, statement)
        status, out, err = _run(capsys, cli_config, "audit", "verify")
        assert status == 1, statement
        assert "BROKEN at entry 2" in out and "cannot be read" in out
        assert "audit_chain_broken" in err and "Traceback" not in err


def test_audit_export_since_writes_json_lines(
    admin_app: Flask,
    cli_config: Path,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sign_in(admin_app.test_client(), ALEX)
    start = clock()
    clock.advance(timedelta(days=2))
    sign_in(admin_app.test_client(), LEE)
    sign_in(admin_app.test_client(), KIM)
    since = (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    status, out, err = _run(capsys, cli_config, "audit", "export", "--since", since)
    assert status == 0 and "exported 2 audit entries" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [entry["actor"] for entry in lines] == [LEE, KIM]
    assert all(len(entry["hash"]) == 64 and entry["event"] == "signin.card" for entry in lines)
    target = tmp_path / "audit.jsonl"
    status, _, _ = _run(capsys, cli_config, "audit", "export", "--output", str(target))
    assert status == 0 and len(target.read_text().splitlines()) == 3
    with pytest.raises(SystemExit):
        main(["--config", str(cli_config), "audit", "export", "--since", "last tuesday"])


def test_registrations_list_filters_by_organisation_and_uuid(
    admin_app: Flask, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(admin_app, ALEX)
    register(admin_app, KIM)
    status, out, _ = _run(capsys, cli_config, "registrations", "list")
    assert status == 0 and ALEX in out and KIM in out
    status, out, _ = _run(capsys, cli_config, "registrations", "list", "--org", "y00001", "--json")
    assert status == 0
    assert [r["account_mail"] for r in json.loads(out)] == [KIM]
    status, out, _ = _run(capsys, cli_config, "registrations", "list", "--uuid", UUIDS[ALEX])
    rows = out.strip().splitlines()
    assert rows[0].startswith("card_uuid\t") and len(rows) == 2 and ALEX in rows[1]


def test_registrations_remove_ends_sessions_and_queues_logouts(
    admin_app: Flask,
    cli_config: Path,
    clock: FakeClock,
    test_rp: TestRelyingParty,
    capsys: pytest.CaptureFixture[str],
) -> None:
    register(admin_app, ALEX)
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    rp = Browser(alex)
    assert rp.redeem(rp.signed_in_code()).status_code == 200
    status, out, _ = _run(
        capsys,
        cli_config,
        "registrations",
        "remove",
        "--uuid",
        UUIDS[ALEX],
        "--reason",
        "other",
        "--detail",
        "card left on a train",
        "--yes",
    )
    assert status == 0, out
    assert f"removed: {UUIDS[ALEX]} linked to {ALEX}" in out
    assert "reason: other: card left on a train" in out and "sessions ended: 1" in out
    repos = broker_of(admin_app).repos
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is None
    assert repos.sessions.active_for_account(ALEX) == []
    ended = repos.audit.list_recent(event_prefix="admin.registration.remove", limit=1)[0]
    assert ended.actor is not None and ended.actor.startswith("cli:")
    assert ended.details["reason_text"] == "card left on a train"
    assert ended.details["via"] == "cli"
    # The logout was queued in the shared outbox: any running broker delivers it. (The
    # command ran on the real clock, a moment after this app's settable one.)
    clock.advance(timedelta(minutes=1))
    assert broker_of(admin_app).oidc.backchannel.deliver_due().delivered == 1
    assert len(test_rp.wait_for(1)) == 1
    reasons = [
        s.end_reason
        for s in [
            repos.sessions.get(e.details["sid"])
            for e in repos.audit.list_recent(event_prefix="signin.card")
        ]
        if s is not None
    ]
    assert reasons == [EndReason.REGISTRATION_REMOVED.value]
    # Nothing there any more: exit 1 with the stable code.
    status, _, err = _run(
        capsys,
        cli_config,
        "registrations",
        "remove",
        "--uuid",
        UUIDS[ALEX],
        "--reason",
        "lost_card",
        "--yes",
    )
    assert status == 1 and "registration_not_found" in err
    status, _, err = _run(
        capsys, cli_config, "registrations", "remove", "--uuid", UUIDS[KIM], "--reason", "other"
    )
    assert status == 2 and "admin_reason_required" in err


def _removal_refusals(app: Flask) -> list[str | None]:
    return [
        e.error_code
        for e in broker_of(app).repos.audit.list_recent(event_prefix="admin.registration.remove")
        if e.outcome is Outcome.FAILURE
    ]


def test_registrations_remove_refuses_an_unknown_reason_with_the_list(
    admin_app: Flask, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(admin_app, ALEX)
    remove = ("registrations", "remove", "--uuid", UUIDS[ALEX], "--yes")
    status, out, err = _run(capsys, cli_config, *remove, "--reason", "lost-card")
    assert status == 2 and out == ""
    assert "admin_reason_required: unknown removal reason 'lost-card'" in err
    assert "Did you mean 'lost_card'?" in err
    for reason in ("lost_card", "left_organisation", "wrong_link", "other"):
        assert f"    {reason} " in err
    # Nothing changed, and the refusal is in the audit log with its code.
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    assert _removal_refusals(admin_app) == ["admin_reason_required"]
    refusal = broker_of(admin_app).repos.audit.list_recent(event_prefix="admin.registration")[0]
    assert refusal.actor is not None and refusal.actor.startswith("cli:")
    assert refusal.details["card_uuid"] == UUIDS[ALEX] and refusal.details["via"] == "cli"


class _Terminal(io.StringIO):
    """Standard input as a terminal at which the administrator types `answer`."""

    def isatty(self) -> bool:
        return True


def test_registrations_remove_confirms_at_a_terminal_and_never_without_one(
    admin_app: Flask,
    cli_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(admin_app, ALEX)
    sign_in(admin_app.test_client(), ALEX)
    repos = broker_of(admin_app).repos
    remove = ("registrations", "remove", "--uuid", UUIDS[ALEX], "--reason", "lost_card")
    # No terminal (a script) and no --yes: refused, audited, nothing changed.
    status, out, err = _run(capsys, cli_config, *remove)
    assert status == 2 and out == ""
    assert "admin_confirmation_required" in err and "--yes" in err and "--dry-run" in err
    assert _removal_refusals(admin_app) == ["admin_confirmation_required"]
    # --dry-run shows who and what, and changes nothing.
    status, out, _ = _run(capsys, cli_config, *remove, "--dry-run")
    assert status == 0
    assert f"Care Identity UUID: {UUIDS[ALEX]}" in out and f"account: {ALEX}" in out
    assert "signed-in sessions that end now: 1" in out and "dry run: nothing was removed" in out
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    assert len(repos.sessions.active_for_account(ALEX)) == 1
    # At a terminal: shown, asked; anything but yes keeps it.
    monkeypatch.setattr("sys.stdin", _Terminal("no\n"))
    status, out, _ = _run(capsys, cli_config, *remove)
    assert status == 1 and "Remove it?" in out and "nothing was removed" in out
    assert f"account: {ALEX}" in out and "signed-in sessions that end now: 1" in out
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    monkeypatch.setattr("sys.stdin", _Terminal("yes\n"))
    status, out, _ = _run(capsys, cli_config, *remove)
    assert status == 0 and f"removed: {UUIDS[ALEX]} linked to {ALEX}" in out
    assert "sessions ended: 1" in out
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is None


def test_refresh_crls_help_says_the_running_workers_take_up_what_it_fetched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["revocation", "refresh-crls", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # What the command itself says when it ends, and what pki/crl.py does.
    assert "shared through the database" in text
    assert "every running worker and instance takes it up at its next check" in text
    assert "not changed" not in text and "own schedule" not in text


def test_revocation_check_and_crl_refresh_from_the_command_line(
    admin_app: Flask, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(admin_app, ALEX)
    status, out, _ = _run(capsys, cli_config, "revocation", "check", "--uuid", UUIDS[ALEX])
    # This broker has no [pki]: said so, and exit 1 (no answer about the card).
    assert status == 1 and f"{UUIDS[ALEX]} ({ALEX}): not_configured" in out
    status, _, err = _run(capsys, cli_config, "revocation", "check", "--uuid", "999999999999")
    assert status == 1 and "registration_not_found" in err
    # Without [pki] there is nothing to fetch: said so, as a configuration matter.
    status, out, _ = _run(capsys, cli_config, "revocation", "refresh-crls")
    assert status == 2 and "no [pki] section" in out
    events = [e.event for e in broker_of(admin_app).repos.audit.list_recent(limit=5)]
    assert "admin.revocation.check" in events  # a refresh that fetched nothing is not
