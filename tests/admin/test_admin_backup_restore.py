"""Backup and restore as docs/backup-restore.md tells an operator to do them, with the
real tools (`sqlite3 .backup`, `pg_dump` / `pg_restore`) while the broker is writing,
then `careid-broker db current` and `audit verify --anchor` on the restored copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from admin_support import ALEX, KIM, LEE, sign_in
from broker_fixtures import fresh_pg_database
from broker_support import write_broker_toml
from flask import Flask
from sqlalchemy.engine import URL, make_url

from careid_broker.cli import main


def _run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    status = main(["--config", str(config), *args])
    out, _ = capsys.readouterr()
    return status, out


def _anchor(capsys: pytest.CaptureFixture[str], config: Path) -> str:
    status, out = _run(capsys, config, "audit", "verify")
    assert status == 0, out
    head = re.search(r"head (\d+:[0-9a-f]{64})", out)
    assert head is not None, out
    return head.group(1)


def _config_for(cli_config: Path, database_url: str, folder: Path) -> Path:
    """The same settings pointed at another database (the restored copy)."""
    import tomllib

    sections = tomllib.loads(cli_config.read_text(encoding="utf-8"))
    sections["database"]["url"] = database_url
    return write_broker_toml(folder / "restored.toml", sections)


def _signing_in_meanwhile(app: Flask) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()

    def keep_signing_in() -> None:
        while not stop.is_set():
            sign_in(app.test_client(), KIM)

    thread = threading.Thread(target=keep_signing_in)
    thread.start()
    return thread, stop


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_sqlite_backup_taken_while_signing_in_restores_and_its_anchor_verifies(
    admin_app: Flask,
    cli_config: Path,
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        pytest.skip("needs the sqlite3 command (Debian package sqlite3)")
    for person in (ALEX, LEE):
        sign_in(admin_app.test_client(), person)
    database = make_url(store_url).database
    assert database is not None
    backup = tmp_path / "backup" / "broker.db"
    backup.parent.mkdir()
    thread, stop = _signing_in_meanwhile(admin_app)
    try:
        # The documented command, while the broker commits sign-ins.
        subprocess.run([sqlite3, database, f".backup '{backup}'"], check=True, timeout=60)
    finally:
        stop.set()
        thread.join(timeout=30)
    sign_in(admin_app.test_client(), ALEX)  # the live log moves on after the backup
    anchor_after = _anchor(capsys, cli_config)

    restored = tmp_path / "restored" / "broker.db"
    restored.parent.mkdir()
    shutil.copyfile(backup, restored)
    config = _config_for(cli_config, f"sqlite:///{restored}", tmp_path)
    status, out = _run(capsys, config, "db", "current")
    assert status == 0, out
    restored_anchor = _anchor(capsys, config)  # the restored chain walks clean
    status, out = _run(capsys, config, "audit", "verify", "--anchor", restored_anchor)
    assert status == 0, out
    # An anchor recorded after the backup names an entry the restore does not have.
    assert anchor_after != restored_anchor
    status, out = _run(capsys, config, "audit", "verify", "--anchor", anchor_after)
    assert status == 1 and "gone" in out, out


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_pg_dump_taken_while_signing_in_restores_and_its_anchor_verifies(
    admin_app: Flask,
    cli_config: Path,
    store_url: str,
    pg_server: URL,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        pytest.skip("needs pg_dump and pg_restore (Debian package postgresql-client)")
    for person in (ALEX, LEE):
        sign_in(admin_app.test_client(), person)
    live = make_url(store_url).set(drivername="postgresql")
    dump = tmp_path / "careid.dump"
    thread, stop = _signing_in_meanwhile(admin_app)
    try:
        subprocess.run(
            [pg_dump, "--format=custom", f"--file={dump}", live.render_as_string(False)],
            check=True,
            timeout=120,
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    with fresh_pg_database(pg_server, "careid_restore") as target:
        subprocess.run(
            [
                pg_restore,
                "--clean",
                "--if-exists",
                "--no-owner",
                f"--dbname={target.set(drivername='postgresql').render_as_string(False)}",
                str(dump),
            ],
            check=True,
            timeout=120,
        )
        config = _config_for(cli_config, target.render_as_string(False), tmp_path)
        status, out = _run(capsys, config, "db", "current")
        assert status == 0, out
        anchor = _anchor(capsys, config)
        status, out = _run(capsys, config, "audit", "verify", "--anchor", anchor)
        assert status == 0, out
        # A later entry than the dump holds is reported as gone, not as a clean chain.
        seq, digest = anchor.split(":")
        later = f"{int(seq) + 1000}:{digest}"
        status, out = _run(capsys, config, "audit", "verify", "--anchor", later)
        assert status == 1 and "gone" in out, out
