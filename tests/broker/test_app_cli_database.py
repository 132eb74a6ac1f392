"""`careid-broker` database commands meeting a database they cannot use: one line naming
it (password hidden), a documented exit status, and nothing created."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from broker_support import REPO, TEST_SECRET_KEY, write_broker_toml

from careid_broker.cli import main
from careid_broker.commands.database import EXIT_DATABASE

#: Commands that read or change the store, and so need its schema.
NEEDS_SCHEMA = [
    ("keys", "list"),
    ("keys", "rotate"),
    ("registrations", "list"),
    ("audit", "verify"),
    ("audit", "export"),
]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(folder: Path, clients_file: Path, database_url: str) -> Path:
    sections: dict[str, dict[str, object]] = {
        "broker": {"issuer": "http://localhost:5000", "secret_key": TEST_SECRET_KEY, "dev": True},
        "database": {"url": database_url},
        "directory": {
            "urls": [f"ldap://127.0.0.1:{_closed_port()}"],
            "bind_dn": "cn=careid-broker,ou=services,dc=nhs,dc=example",
            "bind_password": "Demo-Broker-Service-1",
            "accounts_base": "ou=people,dc=nhs,dc=example",
            "care_identities_base": "ou=careidentities,dc=nhs,dc=example",
            "current_aup_version": "2024-1",
        },
        "oidc": {"clients_file": str(clients_file)},
    }
    return write_broker_toml(folder / "broker.toml", sections)


@pytest.mark.parametrize("command", NEEDS_SCHEMA, ids=" ".join)
def test_a_missing_sqlite_file_is_named_and_not_created(
    command: tuple[str, ...],
    tmp_path: Path,
    clients_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = tmp_path / "broker.db"
    config = _config(tmp_path, clients_file, f"sqlite:///{database}")
    assert main(["--config", str(config), *command]) == EXIT_DATABASE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert str(database) in err and "careid-broker db upgrade" in err
    assert list(tmp_path.iterdir()) == [config]


@pytest.mark.parametrize("command", NEEDS_SCHEMA, ids=" ".join)
def test_a_database_with_no_schema_says_to_upgrade(
    command: tuple[str, ...],
    tmp_path: Path,
    clients_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = tmp_path / "broker.db"
    sqlite3.connect(database).close()
    config = _config(tmp_path, clients_file, f"sqlite:///{database}")
    assert main(["--config", str(config), *command]) == EXIT_DATABASE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "has no schema" in err and "careid-broker db upgrade" in err


#: The same password given in the user part, or in the query as libpq also reads it.
PASSWORD_PLACES = {
    "user part": ("careid:S3cret-Pw@127.0.0.1:{port}/careid", "careid:***@127.0.0.1:{port}/careid"),
    "query": (
        "careid@127.0.0.1:{port}/careid?password=S3cret-Pw&sslmode=prefer&sslpassword=S3cret-Key",
        "careid@127.0.0.1:{port}/careid?password=***&sslmode=prefer&sslpassword=***",
    ),
}


@pytest.mark.parametrize("place", PASSWORD_PLACES)
@pytest.mark.parametrize(
    "command", [("db", "upgrade"), ("db", "current"), *NEEDS_SCHEMA], ids=" ".join
)
def test_an_unreachable_server_is_named_with_its_password_hidden(
    command: tuple[str, ...],
    place: str,
    tmp_path: Path,
    clients_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = _closed_port()
    given, shown = (text.format(port=port) for text in PASSWORD_PLACES[place])
    config = _config(tmp_path, clients_file, f"postgresql+psycopg://{given}")
    assert main(["--config", str(config), *command]) == EXIT_DATABASE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "S3cret" not in err
    assert f"database postgresql+psycopg://{shown}: cannot be used" in err
    assert "Connection refused" in err


@pytest.mark.parametrize("place", PASSWORD_PLACES)
def test_check_config_shows_the_database_with_its_password_hidden(
    place: str, tmp_path: Path, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    given, shown = (text.format(port=port) for text in PASSWORD_PLACES[place])
    config = _config(tmp_path, clients_file, f"postgresql+psycopg://{given}")
    assert main(["--config", str(config), "check-config"]) == 0
    assert f"  [database] postgresql+psycopg://{shown}\n" in capsys.readouterr().out
    assert main(["--config", str(config), "check-config", "--connect"]) == 1
    captured = capsys.readouterr()
    assert f"problem: database postgresql+psycopg://{shown}: does not answer" in captured.err
    assert "S3cret" not in captured.out + captured.err


def test_db_upgrade_names_a_sqlite_folder_it_cannot_create(
    tmp_path: Path, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file where the folder should be: refused even to root, unlike a permission.
    (tmp_path / "var").write_text("not a folder\n")
    folder = tmp_path / "var" / "careid"
    config = _config(tmp_path, clients_file, f"sqlite:///{folder / 'broker.db'}")
    assert main(["--config", str(config), "db", "upgrade"]) == EXIT_DATABASE
    err = capsys.readouterr().err
    assert err == (
        f"careid-broker: database sqlite:///{folder / 'broker.db'}: cannot create its folder"
        f" {folder}: Not a directory\n"
    )


def test_db_current_on_a_missing_file_says_none_and_creates_nothing(
    tmp_path: Path, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, clients_file, f"sqlite:///{tmp_path / 'broker.db'}")
    assert main(["--config", str(config), "db", "current"]) == 1
    assert "revision none" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [config]


def test_an_export_file_that_cannot_be_written_is_one_line(
    tmp_path: Path, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, clients_file, f"sqlite:///{tmp_path / 'broker.db'}")
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    capsys.readouterr()
    target = tmp_path / "no-such-folder" / "audit.jsonl"
    argv = ["--config", str(config), "audit", "export", "--output", str(target)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"careid-broker: audit export: cannot write {target}: No such file or directory\n"


def test_the_installed_command_prints_no_traceback(tmp_path: Path, clients_file: Path) -> None:
    config = _config(tmp_path, clients_file, f"sqlite:///{tmp_path / 'broker.db'}")
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "careid_broker.cli", "--config", str(config), "keys", "list"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_DATABASE
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("command", [("check-config",), ("db", "upgrade"), ("keys", "list")])
def test_a_broker_installed_without_the_postgresql_driver_says_so(
    command: tuple[str, ...], tmp_path: Path, clients_file: Path
) -> None:
    # Installed without the [postgres] extra: `import psycopg` fails as it would then.
    absent = tmp_path / "site" / "psycopg"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    url = f"postgresql+psycopg://careid:S3cret-Pw@127.0.0.1:{_closed_port()}/careid"
    config = _config(tmp_path, clients_file, url)
    paths = [str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "careid_broker.cli", "--config", str(config), *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "database.url: the PostgreSQL driver psycopg is not installed" in done.stderr
    assert "careid-bridge[postgres]" in done.stderr
    assert "S3cret-Pw" not in done.stderr
