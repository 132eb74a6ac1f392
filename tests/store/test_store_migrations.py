"""Alembic migrations produce exactly the models' schema, on both backends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from broker_fixtures import fresh_pg_database
from sqlalchemy import create_engine, inspect, text

from careid_broker.store import current_revision, head_revision, upgrade
from careid_broker.store.base import Base
from careid_broker.store.engine import create_store_engine
from careid_broker.store.migrate import downgrade


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    with fresh_pg_database(request.getfixturevalue("pg_server"), "careid_migrate") as url:
        yield url.render_as_string(hide_password=False)


def _differences(url: str) -> list[object]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_head_gives_exactly_the_models_schema(empty_url: str) -> None:
    assert current_revision(empty_url) is None
    assert _differences(empty_url) != []  # the comparison does see a missing schema

    upgrade(empty_url)

    assert current_revision(empty_url) == head_revision()
    assert _differences(empty_url) == []


# Each process imports the broker first, then starts its upgrade at the same moment.
_UPGRADE_AT = """
import sys, time
from careid_broker.store import upgrade
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(sys.argv[1])
"""


def test_upgrades_started_together_on_several_hosts_wait_for_each_other(
    empty_url: str,
) -> None:
    start = time.time() + 4
    processes = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", _UPGRADE_AT, empty_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert current_revision(empty_url) == head_revision()
    assert _differences(empty_url) == []


def test_upgrade_twice_is_harmless_and_downgrade_removes_everything(empty_url: str) -> None:
    upgrade(empty_url)
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()

    downgrade(empty_url, "base")

    assert current_revision(empty_url) is None
    engine = create_store_engine(empty_url)
    try:
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert left == set()


def test_the_upgrade_erases_the_private_part_of_keys_retired_before_it(
    empty_url: str,
) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "0008_retention_indexes")
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            for kid, state in (("old", "retired"), ("live", "current")):
                conn.execute(
                    text(
                        "INSERT INTO signing_keys (kid, alg, private_key_pem, encrypted,"
                        " public_jwk, state, created_at)"
                        " VALUES (:kid, 'ES256', 'PEM', false, '{}', :state, :at)"
                    ),
                    {"kid": kid, "state": state, "at": "2026-01-01 00:00:00+00:00"},
                )
        upgrade(empty_url)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT kid, private_key_pem FROM signing_keys")).all())
    finally:
        engine.dispose()
    assert rows == {"old": None, "live": "PEM"}


def test_the_upgrade_to_sealed_transactions_keeps_the_rows_and_drops_the_challenge_link(
    empty_url: str,
) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "0010_shared_crls")
    engine = create_engine(empty_url)
    at = "2026-01-01 00:00:00+00:00"
    try:
        with engine.begin() as conn:
            for id_hash, status in (("p" * 64, "pending"), ("c" * 64, "completed")):
                conn.execute(
                    text(
                        "INSERT INTO login_transactions (id_hash, client_id, redirect_uri,"
                        " scope, extras, created_at, expires_at, status)"
                        " VALUES (:h, 'rp', 'https://rp/cb', 'openid', '{}', :at, :at, :s)"
                    ),
                    {"h": id_hash, "s": status, "at": at},
                )
            conn.execute(
                text(
                    "INSERT INTO card_challenges (challenge_hash, transaction_hash, created_at,"
                    " expires_at) VALUES (:c, :t, :at, :at)"
                ),
                {"c": "x" * 64, "t": "p" * 64, "at": at},
            )
        upgrade(empty_url)
        with engine.connect() as conn:
            statuses = (
                conn.execute(text("SELECT status FROM login_transactions ORDER BY status"))
                .scalars()
                .all()
            )
            challenges = conn.execute(text("SELECT count(*) FROM card_challenges")).scalar_one()
        keys = inspect(engine).get_foreign_keys("card_challenges")
    finally:
        engine.dispose()
    # A pending row is a stored transaction, which the broker still completes.
    assert statuses == ["completed", "pending"]
    assert challenges == 0  # five-minute challenges are not carried over (as in 0005)
    assert keys == []  # a pending transaction has no row to refer to


def test_the_upgrade_to_entry_ids_keeps_every_sub_and_the_downgrade_keeps_retired_ones(
    empty_url: str,
) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "0012_session_certificates")
    engine = create_engine(empty_url)
    at = "2026-01-01 00:00:00+00:00"
    insert = text(
        "INSERT INTO subjects (sub, account_mail, account_dn, created_at)"
        " VALUES (:s, 'a@nhs.net', 'uid=a', :at)"
    )
    try:
        with engine.begin() as conn:
            conn.execute(insert, {"s": "old-sub", "at": at})
        upgrade(empty_url)
        with engine.begin() as conn:
            kept = conn.execute(text("SELECT sub, account_entry_id FROM subjects")).all()
            # The address passes to another entry: the old row retired, a new current one.
            conn.execute(text("UPDATE subjects SET retired_at = :at"), {"at": at})
            conn.execute(insert, {"s": "new-sub", "at": at})
        downgrade(empty_url, "0012_session_certificates")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT sub, account_mail FROM subjects ORDER BY sub")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in kept] == [("old-sub", None)]  # takes its id at sign-in
    assert [tuple(row) for row in rows] == [
        ("new-sub", "a@nhs.net"),
        ("old-sub", "retired:old-sub"),
    ]


def test_the_upgrade_to_registration_entry_ids_keeps_every_registration(
    empty_url: str,
) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "0013_subject_entry_ids")
    engine = create_engine(empty_url)
    row = {
        "uuid": "555000000001",
        "mail": "a@nhs.net",
        "dn": "uid=a,ou=people",
        "at": "2026-01-01 00:00:00+00:00",
    }
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO registrations (card_uuid, account_mail, account_dn, org_code,"
                    " link_mode, cert_issuer_dn, cert_serial, cert_fingerprint, registered_at,"
                    " how) VALUES (:uuid, :mail, :dn, 'RX1', 'uuid', 'CN=CA', '0a', 'ff', :at,"
                    " 'self-service')"
                ),
                row,
            )
        upgrade(empty_url)
        with engine.begin() as conn:
            kept = conn.execute(
                text("SELECT card_uuid, account_dn, account_entry_id FROM registrations")
            ).all()
            # A sign-in at the registered DN records the entry's identifier.
            conn.execute(text("UPDATE registrations SET account_entry_id = 'e-1'"))
        downgrade(empty_url, "0013_subject_entry_ids")
        with engine.connect() as conn:
            left = conn.execute(text("SELECT card_uuid, account_mail FROM registrations")).all()
    finally:
        engine.dispose()
    # Its DN decides until then (docs/upgrades.md).
    assert [tuple(r) for r in kept] == [("555000000001", "uid=a,ou=people", None)]
    assert [tuple(r) for r in left] == [("555000000001", "a@nhs.net")]
