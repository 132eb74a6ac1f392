"""A relying party's `sub` follows the directory entry, not only its mail address.

OIDC Core §2: a `sub` is "never reassigned". An address given to a new person (a new
directory entry, so a new `entryUUID`) gets a new `sub`; the same entry renamed or
moved keeps its `sub`. Against a real slapd, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of, write_broker_toml
from flask import Flask
from ldap3 import ALL_ATTRIBUTES, Connection
from oidc_support import ALEX, Browser, id_token_claims, make_oidc_app
from sqlalchemy import select, update

from careid_broker.cli import main
from careid_broker.store import AuditRecord, LinkMode, NewRegistration
from careid_broker.store.models import Registration, Subject
from careid_devkit.slapd import Slapd

ALEX_DN = "uid=alex.morgan,ou=people,dc=nhs,dc=example"


@pytest.fixture
def admin(own_slapd: Slapd) -> Iterator[Connection]:
    """The directory's administrator, to move, delete and add entries."""
    connection = Connection(
        own_slapd.url, own_slapd.root_dn, own_slapd.root_password, auto_bind=True
    )
    yield connection
    connection.unbind()


@pytest.fixture
def app(app_factory: Callable[..., Flask], tmp_path: Path, own_slapd: Slapd) -> Flask:
    return make_oidc_app(app_factory, tmp_path, directory_slapd=own_slapd)


def _signed_in_sub(app: Flask) -> tuple[str, str]:
    """(the ID token's `sub`, userinfo's `sub`) for a fresh browser signing in as Alex."""
    browser = Browser(app.test_client())
    tokens = browser.redeem(browser.signed_in_code(ALEX)).get_json()
    _, claims = id_token_claims(browser.client, tokens["id_token"])
    info = browser.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).get_json()
    return claims["sub"], info["sub"]


def _entry(admin: Connection, dn: str) -> dict[str, Any]:
    assert admin.search(dn, "(objectClass=*)", search_scope="BASE", attributes=ALL_ATTRIBUTES)
    return {
        name: list(values) for name, values in admin.entries[0].entry_attributes_as_dict.items()
    }


def _audits(app: Flask, event: str) -> list[AuditRecord]:
    return list(broker_of(app).repos.audit.list_recent(event_prefix=event, limit=100))


def test_an_address_given_to_a_new_entry_gets_a_new_sub(app: Flask, admin: Connection) -> None:
    first, first_info = _signed_in_sub(app)
    assert first == first_info
    # Alex leaves; the address goes to a new person, a new entry under another name.
    attributes = _entry(admin, ALEX_DN)
    assert admin.delete(ALEX_DN)
    attributes["uid"] = ["alex.morgan2"]
    assert admin.add("uid=alex.morgan2,ou=people,dc=nhs,dc=example", attributes=attributes)

    second, second_info = _signed_in_sub(app)
    assert second == second_info and second != first
    # The new holder keeps the new `sub` from now on.
    assert _signed_in_sub(app)[0] == second
    [reassigned] = _audits(app, "subject.reassigned")
    assert reassigned.subject == ALEX and reassigned.details["previous_sub"] == first


def test_a_renamed_or_moved_entry_keeps_its_sub(app: Flask, admin: Connection) -> None:
    first, _ = _signed_in_sub(app)
    assert admin.modify_dn(ALEX_DN, "uid=alex.morgan-renamed")
    assert _signed_in_sub(app)[0] == first
    moved = "ou=moved,ou=people,dc=nhs,dc=example"
    assert admin.add(moved, "organizationalUnit", {"ou": "moved"})
    assert admin.modify_dn(
        "uid=alex.morgan-renamed,ou=people,dc=nhs,dc=example",
        "uid=alex.morgan-renamed",
        new_superior=moved,
    )
    assert _signed_in_sub(app)[0] == first
    assert _audits(app, "subject.reassigned") == []


def _give_alexs_address_to_a_new_entry(admin: Connection) -> None:
    attributes = _entry(admin, ALEX_DN)
    assert admin.delete(ALEX_DN)
    attributes["uid"] = ["alex.morgan2"]
    attributes["cn"] = attributes["displayName"] = ["New Starter"]
    assert admin.add("uid=alex.morgan2,ou=people,dc=nhs,dc=example", attributes=attributes)


@pytest.mark.parametrize("new_holder_signs_in_first", [False, True])
def test_a_session_ends_when_its_address_is_given_to_another_entry(
    app: Flask, admin: Connection, new_holder_signs_in_first: bool
) -> None:
    # Alex signed in with a password at a ward PC and left; her address goes to a new
    # person (a new entry). Her session must not carry on as the new holder: neither
    # the RP's refresh nor single sign-on may mint tokens with their name under her sub.
    alex = Browser(app.test_client())
    tokens = alex.redeem(alex.signed_in_code(ALEX)).get_json()
    _give_alexs_address_to_a_new_entry(admin)
    if new_holder_signs_in_first:
        _signed_in_sub(app)  # which retires Alex's sub
    refused = alex.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refused.status_code == 400, refused.get_data(as_text=True)
    assert refused.get_json()["error"] == "invalid_grant"
    [ended] = _audits(app, "session.end")
    assert ended.subject == ALEX and ended.details["reason"] == "account_refused"
    assert ended.details["why"] == "the address now belongs to another directory entry"
    silent = alex.authorize(prompt="none")
    assert "login_required" in silent.location


# `careid-broker subjects backfill-entry-ids`: subs made before revision 0013 keep no
# entry identifier and would go to whoever holds their address at the next sign-in.

LEE = "lee.admin@nhs.net"
LEE_DN = "uid=lee.admin,ou=people,dc=nhs,dc=example"


@pytest.fixture
def cli_config(
    tmp_path: Path, broker_settings: dict[str, dict[str, Any]], own_slapd: Slapd, app: Flask
) -> Path:
    """A broker.toml for the app's database and its (private) directory."""
    sections = {name: dict(values) for name, values in broker_settings.items()}
    sections["directory"] = own_slapd.directory_settings()
    sections["oidc"] = {"clients_file": str(tmp_path / "oidc-test-clients.toml")}
    sections.pop("signin", None)
    return write_broker_toml(tmp_path / "broker.toml", sections)


def _backfill(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    status = main(["--config", str(config), "subjects", "backfill-entry-ids", *args])
    out, err = capsys.readouterr()
    return status, out, err


def _subject_rows(app: Flask) -> dict[str, tuple[str, str | None, bool]]:
    """Every row: sub -> (address, entry id, retired)."""
    with broker_of(app).store.session() as session:
        rows = session.execute(
            select(Subject.sub, Subject.account_mail, Subject.account_entry_id, Subject.retired_at)
        ).all()
    return {r.sub: (r.account_mail, r.account_entry_id, r.retired_at is not None) for r in rows}


def _forget_entry_ids(app: Flask) -> None:
    """As every row was before revision 0013."""
    with broker_of(app).store.transaction() as session:
        session.execute(update(Subject).values(account_entry_id=None))


def _entry_uuid(admin: Connection, dn: str) -> str:
    assert admin.search(dn, "(objectClass=*)", search_scope="BASE", attributes=["entryUUID"])
    return str(admin.entries[0].entryUUID.value)


def test_a_backfilled_sub_stays_with_its_entry_when_the_address_goes_to_someone_new(
    app: Flask, admin: Connection, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _signed_in_sub(app)
    _forget_entry_ids(app)

    status, out, _ = _backfill(capsys, cli_config)
    assert status == 0, out
    assert "entry identifiers recorded: 1" in out
    assert _subject_rows(app)[first] == (ALEX, _entry_uuid(admin, ALEX_DN), False)
    [done] = _audits(app, "subjects.entry_ids_backfilled")
    assert done.actor.startswith("cli:") and done.details["recorded"] == 1

    # Alex leaves before signing in again; the address goes to a new person.
    attributes = _entry(admin, ALEX_DN)
    assert admin.delete(ALEX_DN)
    attributes["uid"] = ["alex.morgan2"]
    assert admin.add("uid=alex.morgan2,ou=people,dc=nhs,dc=example", attributes=attributes)
    second, _ = _signed_in_sub(app)
    assert second != first
    [reassigned] = _audits(app, "subject.reassigned")
    assert reassigned.details["previous_sub"] == first


def test_the_backfill_lists_what_it_cannot_tell_and_acts_on_it_only_when_told(
    app: Flask, admin: Connection, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subjects = broker_of(app).repos.subjects
    lee = subjects.sub_for_account(mail=LEE, dn=LEE_DN)
    alex = subjects.sub_for_account(mail=ALEX, dn=ALEX_DN)
    gone = subjects.sub_for_account(mail="gone@nhs.net", dn="uid=gone,ou=people,dc=nhs,dc=example")
    assert admin.modify_dn(ALEX_DN, "uid=alex.morgan-renamed")
    renamed = "uid=alex.morgan-renamed,ou=people,dc=nhs,dc=example"
    before = _subject_rows(app)
    assert all(entry_id is None for _, entry_id, _ in before.values())

    # By default only what is certain is done: Lee's entry is still where it was.
    status, out, _ = _backfill(capsys, cli_config)
    assert status == 0, out
    assert f"moved\t{ALEX}\twas {ALEX_DN}\tnow {renamed}" in out
    assert "unheld\tgone@nhs.net" in out
    assert "entry identifiers recorded: 1" in out and "subjects retired: 0" in out
    assert "left as they are" in out
    rows = _subject_rows(app)
    assert rows[lee] == (LEE, _entry_uuid(admin, LEE_DN), False)
    assert rows[alex] == (ALEX, None, False) and rows[gone] == ("gone@nhs.net", None, False)

    # A dry run of the decisions changes nothing and audits nothing.
    audited = len(_audits(app, "subject"))
    status, out, _ = _backfill(
        capsys, cli_config, "--moved", "record", "--unheld", "retire", "--dry-run"
    )
    assert status == 0 and "would be recorded: 1" in out and "would be retired: 1" in out
    assert _subject_rows(app) == rows and len(_audits(app, "subject")) == audited

    # The administrator has checked: Alex was renamed; nobody holds the other address.
    status, out, _ = _backfill(capsys, cli_config, "--moved", "record", "--unheld", "retire")
    assert status == 0, out
    rows = _subject_rows(app)
    assert rows[alex] == (ALEX, _entry_uuid(admin, renamed), False)
    assert rows[gone] == ("gone@nhs.net", None, True)
    [retired] = _audits(app, "subject.retired")
    assert retired.subject == "gone@nhs.net" and retired.details["previous_sub"] == gone
    # Alex keeps the sub the relying parties know.
    assert _signed_in_sub(app)[0] == alex


def _registered_before_0014(app: Flask, mail: str, dn: str, card_uuid: str) -> None:
    """A registration as every one was before revision 0014: no entry identifier."""
    broker_of(app).repos.registrations.create(
        NewRegistration(
            card_uuid=card_uuid,
            account_mail=mail,
            account_dn=dn,
            org_code="RX1",
            link_mode=LinkMode.UUID,
            cert_issuer_dn="CN=Test Issuing CA",
            cert_serial="01",
            cert_fingerprint=card_uuid * 2,
        )
    )


def _registration_entry_ids(app: Flask) -> dict[str, str | None]:
    with broker_of(app).store.session() as session:
        rows = session.execute(select(Registration.account_mail, Registration.account_entry_id))
        return {r.account_mail: r.account_entry_id for r in rows}


def test_the_backfill_gives_registrations_their_entry_so_a_rename_keeps_them(
    app: Flask, admin: Connection, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Registrations made before 0014 are held to their DN until their card next signs
    # in: a person renamed before then would be refused. Run after the upgrade, the
    # backfill records the entry at each registered DN; a rename after it costs nothing.
    _registered_before_0014(app, LEE, LEE_DN, "555000000011")
    _registered_before_0014(app, ALEX, ALEX_DN, "555000000012")
    assert admin.modify_dn(ALEX_DN, "uid=alex.morgan-renamed")  # before the backfill
    renamed = "uid=alex.morgan-renamed,ou=people,dc=nhs,dc=example"

    status, out, _ = _backfill(capsys, cli_config)
    assert status == 0, out
    assert "registrations' entry identifiers recorded: 1" in out
    assert f"registration\t{ALEX}\tcard 555000000012\twas {ALEX_DN}\tnow {renamed}" in out
    assert _registration_entry_ids(app) == {LEE: _entry_uuid(admin, LEE_DN), ALEX: None}
    [done] = _audits(app, "subjects.entry_ids_backfilled")
    assert done.details["registrations_recorded"] == 1
    assert done.details["registrations_left"] == 1

    # Alex is the same person renamed: the administrator says so.
    status, out, _ = _backfill(capsys, cli_config, "--moved", "record")
    assert status == 0, out
    assert _registration_entry_ids(app)[ALEX] == _entry_uuid(admin, renamed)


def test_the_backfill_needs_a_mapping_that_reads_entry_ids(
    cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = cli_config.read_text(encoding="utf-8")
    cli_config.write_text(
        text + '\n[directory.mapping.accounts]\nentry_id = ""\n', encoding="utf-8"
    )
    status, _, err = _backfill(capsys, cli_config)
    assert status == 2 and "entry_id is empty" in err
