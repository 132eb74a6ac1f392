"""Pure parts of local administration: reasons, rights and their cache, scope, CSV, config."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from careid_broker.admin.config import ApiScope, read_admin_settings, read_api_settings
from careid_broker.admin.errors import RemovalReasonError
from careid_broker.admin.export import csv_lines
from careid_broker.admin.reasons import RemovalReason, parse_reason
from careid_broker.admin.rights import Actor, CachedRights, admin_orgs, session_key
from careid_broker.directory import MailAccount
from careid_broker.oidc.client_secrets import hash_secret
from careid_broker.settings import SettingsReader
from careid_broker.store import LinkMode, RegistrationRecord

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _account(**changes: object) -> MailAccount:
    values: dict[str, object] = {
        "dn": "uid=lee.admin,ou=people,dc=nhs,dc=example",
        "mail": "lee.admin@nhs.net",
        "display_name": "Lee Admin",
        "active": True,
        "org_code": "RX1",
        "admin_org_codes": ("rx1", " RX2 ", ""),
    }
    values.update(changes)
    return MailAccount(**values)  # type: ignore[arg-type]


# Reasons.


def test_listed_reasons_need_no_words_and_drop_any_given() -> None:
    for kind in ("lost_card", "left_organisation", "wrong_link"):
        reason = parse_reason(kind, "Dr Smith's patient list")
        assert reason.kind is RemovalReason(kind) and reason.text is None


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (None, None),
        ("", "x"),
        ("LOST_CARD", None),
        ("other", None),
        ("other", " \t "),
        ("other", "x" * 501),
        # Words that cannot be stored or would disguise the audit entry.
        ("other", "card \ud800 broken"),
        ("other", "card\x00broken"),
        ("other", "card \x1b[2J broken"),
        ("other", "card \u202e nekorb"),
        ("lost_card\udcff", None),
    ],
)
def test_unusable_reasons_are_refused(kind: str | None, text: str | None) -> None:
    with pytest.raises(RemovalReasonError) as caught:
        parse_reason(kind, text)
    assert caught.value.code.value == "admin_reason_required"


def test_other_keeps_the_words_tidied() -> None:
    assert parse_reason("other", "  card\n cut   in two ").text == "card cut in two"
    assert parse_reason("wrong_link", None).kind is RemovalReason.WRONG_LINK
    free = parse_reason("other", "card left on a train")
    assert free.kind is RemovalReason.OTHER and free.describe() == "other: card left on a train"


# Rights.


def test_rights_come_only_from_a_usable_account() -> None:
    assert admin_orgs(_account(), now=NOW) == {"RX1", "RX2"}
    assert admin_orgs(None, now=NOW) == frozenset()
    assert admin_orgs(_account(active=False), now=NOW) == frozenset()
    assert admin_orgs(_account(expires=NOW - timedelta(seconds=1)), now=NOW) == frozenset()
    assert admin_orgs(_account(expires=NOW + timedelta(days=1)), now=NOW) == {"RX1", "RX2"}
    assert admin_orgs(_account(problems=("bad status",)), now=NOW) == frozenset()
    # An AUP not accepted is about signing in, not about who administers what.
    assert admin_orgs(_account(aup_version=None), now=NOW) == {"RX1", "RX2"}
    # Only what can be an ODS code names an organisation; anything else is left out.
    odd = ("rx1", 'R"X;', "Y\u0141", "A\r\nB", "\u0661\u0662", "R X1", "x" * 33)
    assert admin_orgs(_account(admin_org_codes=odd), now=NOW) == {"RX1"}


def test_cached_rights_are_for_one_session_and_five_minutes() -> None:
    cached = CachedRights(session=session_key("sid-1"), org_codes=frozenset({"RX1"}), read_at=NOW)
    back = CachedRights.from_json(cached.to_json())
    assert back == cached
    ttl = timedelta(minutes=5)
    assert back.fresh_for("sid-1", now=NOW + timedelta(minutes=4, seconds=59), ttl=ttl)
    assert not back.fresh_for("sid-1", now=NOW + ttl, ttl=ttl)
    assert not back.fresh_for("sid-2", now=NOW, ttl=ttl)  # a new sign-in re-reads
    assert not back.fresh_for("sid-1", now=NOW - timedelta(seconds=1), ttl=ttl)
    assert not back.fresh_for("sid-1", now=NOW, ttl=timedelta(0))
    assert "sid-1" not in str(cached.to_json())
    for junk in (
        None,
        "x",
        {"s": 1},
        {"s": "a", "o": "RX1", "t": 1.0},
        {"s": "a", "o": [], "t": "1"},
        {"s": "a", "o": [1], "t": 1.0},
        {"s": "a", "o": [], "t": float("nan")},
    ):
        assert CachedRights.from_json(junk) is None


def test_an_actor_covers_its_organisations_only() -> None:
    actor = Actor(name="lee.admin@nhs.net", org_codes=frozenset({"RX1"}), via="console")
    assert actor.covers("RX1") and actor.covers("rx1") and actor.covers(None, "RX1")
    assert not actor.covers("Y00001") and not actor.covers(None) and not actor.covers()
    cli = Actor(name="cli:root", org_codes=None, via="cli")
    assert cli.covers("Y00001") and cli.sql_org_codes() is None


# CSV.


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    record = RegistrationRecord(
        id=1,
        card_uuid="555000000001",
        account_mail="alex.morgan@nhs.net",
        account_dn="uid=alex.morgan",
        org_code="RX1",
        link_mode=LinkMode.CERTIFICATE,
        cert_issuer_dn='=cmd|"/c calc"!A1',
        cert_serial="-1",
        cert_fingerprint="ab" * 32,
        registered_at=NOW,
        how="@SUM(1)",
    )
    text = "".join(csv_lines([record]))
    assert text.startswith("card_uuid,account_mail,org_code,")
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["cert_issuer_dn"] == '\'=cmd|"/c calc"!A1'
    assert row["cert_serial"] == "'-1" and row["how"] == "'@SUM(1)"
    assert row["registered_at"] == "2026-11-21T09:00:00Z" and row["link_mode"] == "certificate"


# Configuration.


def test_admin_settings_are_bounded_to_five_minutes() -> None:
    problems: list[str] = []
    settings = read_admin_settings(
        SettingsReader({"rights_cache_seconds": 60, "search_limit": 10}, "admin", problems)
    )
    assert problems == [] and settings.rights_cache == timedelta(seconds=60)
    read_admin_settings(
        SettingsReader({"rights_cache_seconds": 301, "colour": "blue"}, "admin", problems)
    )
    assert problems == [
        "admin.rights_cache_seconds: must be between 0 and 300",
        "admin.colour: is not a known setting",
    ]


def test_api_clients_are_checked_and_every_problem_named() -> None:
    good_hash = hash_secret("a-long-enough-secret-for-this-test", log2_n=10)
    problems: list[str] = []
    settings = read_api_settings(
        SettingsReader(
            {
                "clients": {
                    "tool": {
                        "secret_hash": good_hash,
                        "scopes": ["registrations:read"],
                        "org_codes": ["RX1"],
                    },
                    "webmail": {
                        "secret_hash": good_hash,
                        "scopes": ["registrations:read"],
                        "org_codes": ["RX1"],
                    },
                    "plain": {
                        "secret": "hunter2",
                        "scopes": ["registrations:read"],
                        "org_codes": ["RX1"],
                    },
                    "greedy": {
                        "secret_hash": good_hash,
                        "scopes": ["openid"],
                        "org_codes": ["RX1"],
                    },
                    "nowhere": {"secret_hash": good_hash, "scopes": ["registrations:write"]},
                    "bad org": {
                        "secret_hash": good_hash,
                        "scopes": ["registrations:read"],
                        "org_codes": ["R X"],
                    },
                }
            },
            "api",
            problems,
        ),
        reserved_client_ids=["webmail"],
    )
    assert set(settings.clients) == {"tool"}
    tool = settings.clients["tool"]
    assert tool.scopes == {ApiScope.READ} and tool.org_codes == {"RX1"}
    assert tool.check_secret("a-long-enough-secret-for-this-test") and not tool.check_secret("x")
    assert "digest" not in repr(tool) and "salt" not in repr(tool)
    text = "\n".join(problems)
    assert "api.clients.webmail: is also a relying party's client id" in text
    assert "api.clients.plain.secret: plain secrets are not accepted" in text
    assert "api.clients.greedy.scopes: 'openid' is not one of" in text
    assert "api.clients.nowhere.org_codes: is required" in text
    assert "api.clients.bad org: a client id is" in text
    assert "api.clients.bad org.org_codes: 'R X' is not an organisation" in text
