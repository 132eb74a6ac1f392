"""`careid-broker`: check-config, db upgrade, keys rotate and reencrypt, and serve under
gunicorn."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from broker_support import TEST_SECRET_KEY, write_broker_toml

from careid_broker.cli import build_parser, main
from careid_broker.store import (
    KeyAlgorithm,
    Repositories,
    create_store,
    current_revision,
    head_revision,
)
from careid_devkit.slapd import Slapd


def write_config(folder: Path, *, slapd: Slapd, database_url: str, clients_file: Path) -> Path:
    """A broker.toml for these parts (development mode)."""
    sections: dict[str, dict[str, object]] = {
        "broker": {
            "issuer": "http://localhost:5000",
            "secret_key": TEST_SECRET_KEY,
            "dev": True,
            "dev_disable_workers": True,
        },
        "logging": {"format": "json"},
        "database": {"url": database_url},
        "directory": slapd.directory_settings(connect_timeout=1.0, receive_timeout=1.0),
        "oidc": {"clients_file": str(clients_file)},
    }
    return write_broker_toml(folder / "broker.toml", sections)


@pytest.fixture
def config_file(tmp_path: Path, demo_slapd: Slapd, clients_file: Path) -> Path:
    return write_config(
        tmp_path,
        slapd=demo_slapd,
        database_url="sqlite:///data/broker.db",
        clients_file=clients_file,
    )


def test_check_config_accepts_a_good_file_and_checks_connections(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), "check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    # --connect: the directory answers, but the database has no schema yet.
    (config_file.parent / "data").mkdir()
    assert main(["--config", str(config_file), "check-config", "--connect"]) == 1
    assert "careid-broker db upgrade" in capsys.readouterr().err


def test_check_config_connect_names_a_missing_sqlite_file_and_creates_nothing(
    config_file: Path, demo_slapd: Slapd, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = config_file.parent / "data"
    folder.mkdir()
    assert main(["--config", str(config_file), "check-config", "--connect"]) == 1
    captured = capsys.readouterr()
    assert (
        f"problem: database sqlite:///{folder / 'broker.db'}: there is no such file;"
        " create it with `careid-broker db upgrade`\n" in captured.err
    )
    # The other parts are still asked.
    assert f"ok: directory {demo_slapd.url}: the service account" in captured.out
    assert list(folder.iterdir()) == []


def test_check_config_names_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[broker]\nissuer = "ftp://x"\nsecret_key = "short"\n[server]\nworkers = "two"\n'
        "[database]\n[directory]\nurls = []\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("CAREID_SERVER_THREADS", "lots")
    assert main(["--config", str(bad), "check-config"]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) >= 7, err
    for fragment in (
        "broker.issuer",
        "broker.secret_key",
        "server.workers",
        "database.url: is required",
        "directory.urls",
        "directory.bind_dn: is required",
        "CAREID_SERVER_THREADS",
    ):
        assert fragment in err
    # Its own headline: the code, the file and what to do, not "run check-config" again.
    headline = err.splitlines()[0]
    assert headline.startswith("careid-broker: broker_config_invalid: ")
    assert str(bad) in headline and f"{len(problems)} problems" in headline
    assert "check-config" not in err


def test_files_that_are_not_utf8_are_named_not_a_traceback(
    config_file: Path, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin_clients = config_file.parent / "clients-latin1.toml"
    latin_clients.write_bytes(clients_file.read_bytes() + "# Caf\u00e9\n".encode("latin-1"))
    line = clients_file.read_bytes().count(b"\n") + 1
    assert main(["clients", "list", str(latin_clients)]) == 1
    assert capsys.readouterr().err == (
        f"{latin_clients}: is not UTF-8 text (line {line}): save it as UTF-8\n"
    )
    config_file.write_bytes(config_file.read_bytes() + "# R\u00e9seau\n".encode("latin-1"))
    assert main(["--config", str(config_file), "check-config"]) == 2
    err = capsys.readouterr().err
    assert f"problem: {config_file}: is not UTF-8 text (line " in err, err


def test_check_config_says_which_known_name_a_typo_meant(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with config_file.open("a", encoding="utf-8") as out:
        out.write('[ops]\nmetrics_allowed_network = ["127.0.0.1"]\ncolour = "blue"\n')
        out.write("[servr]\nworkers = 2\n")
    assert main(["--config", str(config_file), "check-config"]) == 2
    err = capsys.readouterr().err
    assert (
        "ops.metrics_allowed_network: is not a known setting;"
        " did you mean 'metrics_allowed_networks'?" in err
    )
    assert "[servr]: is not a known section; did you mean 'server'?" in err
    # Nothing close: no guess, and still an error.
    assert "ops.colour: is not a known setting\n" in err


def test_check_config_names_a_client_whose_default_acr_values_the_broker_does_not_know(
    tmp_path: Path, demo_slapd: Slapd, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(
        clients_file.read_text(encoding="utf-8")
        + '\n[clients.ward]\nredirect_uris = ["https://ward.example.test/cb"]\n'
        'token_endpoint_auth_method = "none"\ndefault_acr_values = ["AAL3"]\n',
        encoding="utf-8",
    )
    config = write_config(
        tmp_path, slapd=demo_slapd, database_url="sqlite:///broker.db", clients_file=clients
    )
    assert main(["--config", str(config), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "clients.ward.default_acr_values" in err and "'AAL3'" in err, err


def test_check_config_ok_says_what_it_checked_and_warns_of_development_mode(
    tmp_path: Path, demo_slapd: Slapd, clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        slapd=demo_slapd,
        database_url="postgresql+psycopg://careid:db-Pa55word@db.trust.example/careid",
        clients_file=clients_file,
    )
    assert main(["--config", str(config), "check-config"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for section in ("broker", "server", "logging", "ops", "database", "directory", "signin"):
        assert f"  [{section}] " in out, out
    for section in ("oidc", "card", "pki", "admin", "api"):
        assert f"  [{section}] " in out, out
    assert "[database] postgresql+psycopg://careid:***@db.trust.example/careid" in out
    assert f"[directory] {demo_slapd.url} (first); bind as '{demo_slapd.service_bind_dn}'" in out
    lines = clients_file.read_text().splitlines()
    clients = sum(1 for line in lines if line.startswith("[clients."))
    assert f"[oidc] {clients} client" in out
    assert "[pki] not set: card sign-in is not available" in out
    assert "db-Pa55word" not in out + captured.err
    assert demo_slapd.service_password not in out + captured.err
    assert "WARNING: development mode is on ([broker] dev = true)" in captured.err
    assert out.splitlines()[-1] == (
        f"configuration OK: {config.resolve()} (connections not checked: add --connect)"
    )


def test_config_is_accepted_after_the_subcommand_and_a_conflict_is_refused(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(config_file)]) == 0
    assert "configuration OK" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", str(config_file)]) == 0
    assert main(["keys", "list", "--config", str(config_file)]) == 0
    # The same file twice (however written) is fine.
    same = ["--config", str(config_file), "check-config", "--config", str(config_file)]
    assert main(same) == 0
    capsys.readouterr()
    other = tmp_path / "other.toml"
    for argv in (
        ["--config", str(config_file), "check-config", "--config", str(other)],
        ["check-config", "--config", str(config_file), "--config", str(other)],
    ):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        assert raised.value.code == 2
        err = capsys.readouterr().err
        assert "--config names two different files" in err and str(other) in err


def test_db_upgrade_creates_the_schema(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{config_file.parent / 'data' / 'broker.db'}"
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    assert current_revision(url) == head_revision()
    assert head_revision() in capsys.readouterr().out
    assert main(["--config", str(config_file), "db", "current"]) == 0
    # Idempotent: a second upgrade changes nothing.
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0


def test_keys_rotate_changes_the_published_keys(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{config_file.parent / 'data' / 'broker.db'}"
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    store = create_store(url)
    try:
        repos = Repositories.build(store)
        repos.keys.ensure_keys()
        before = {k.state.value: k.kid for k in repos.keys.publishable()}
        capsys.readouterr()
        assert main(["--config", str(config_file), "keys", "rotate"]) == 0
        after = {k.state.value: k.kid for k in repos.keys.publishable()}
    finally:
        store.dispose()
    # The published next key became current, the old current stays published as previous,
    # and a new next key is published before it signs anything.
    assert after["current"] == before["next"]
    assert after["previous"] == before["current"]
    assert after["next"] not in before.values()
    out = capsys.readouterr().out
    assert after["current"] in out and after["next"] in out
    assert main(["--config", str(config_file), "keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(kid in listed for kid in after.values())
    # --if-current: a second instance running the same rotation does nothing.
    assert (
        main(["--config", str(config_file), "keys", "rotate", f"--if-current={before['current']}"])
        == 1
    )


def test_keys_rotate_if_current_rotates_every_algorithm_once(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schedule run from several hosts names one key; every algorithm in use rotates
    with it, once."""
    url = f"sqlite:///{config_file.parent / 'data' / 'broker.db'}"
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    store = create_store(url)
    try:
        repos = Repositories.build(store)
        repos.keys.ensure_keys()
        repos.keys.for_alg(KeyAlgorithm.ES256).ensure_keys()  # a client asked for ES256

        def current() -> dict[str, str]:
            return {
                k.alg.value: k.kid for k in repos.keys.publishable() if k.state.value == "current"
            }

        before = current()
        rotate = ["--config", str(config_file), "keys", "rotate"]
        assert main([*rotate, f"--if-current={before['RS256']}"]) == 0
        after = current()
        assert after["RS256"] != before["RS256"] and after["ES256"] != before["ES256"]
        # The second host, same schedule: nothing rotates, whichever key it names.
        capsys.readouterr()
        assert main([*rotate, f"--if-current={before['RS256']}"]) == 1
        assert main([*rotate, f"--if-current={before['ES256']}"]) == 1
        assert current() == after
        assert "not rotated: the current key is" in capsys.readouterr().out
    finally:
        store.dispose()


def test_keys_rotate_refuses_a_passphrase_that_does_not_open_the_keys(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{config_file.parent / 'data' / 'broker.db'}"
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    rotate = ["--config", str(config_file), "keys", "rotate"]
    monkeypatch.setenv("CAREID_OIDC_SIGNING_KEY_PASSPHRASE", "correct horse")
    assert main(rotate) == 0
    store = create_store(url)
    try:
        repos = Repositories.build(store, key_passphrase=b"correct horse")
        before = {k.state.value: k.kid for k in repos.keys.publishable()}
        capsys.readouterr()
        # From a shell without the passphrase, or with a mistyped one, a new next key
        # would be made in clear, or under a passphrase no instance has: refused, with a
        # status a schedule cannot take for "another host rotated" (1).
        monkeypatch.delenv("CAREID_OIDC_SIGNING_KEY_PASSPHRASE")
        assert main(rotate) == 2
        refused = capsys.readouterr().err
        assert "not rotated" in refused and "CAREID_OIDC_SIGNING_KEY_PASSPHRASE" in refused
        monkeypatch.setenv("CAREID_OIDC_SIGNING_KEY_PASSPHRASE", "correct hrose")
        assert main(rotate) == 2
        refused = capsys.readouterr().err
        assert "CAREID_OIDC_SIGNING_KEY_PASSPHRASE" in refused and "hrose" not in refused
        assert {k.state.value: k.kid for k in repos.keys.publishable()} == before
        # With the passphrase the keys were made with, the rotation goes ahead.
        monkeypatch.setenv("CAREID_OIDC_SIGNING_KEY_PASSPHRASE", "correct horse")
        assert main(rotate) == 0
        assert repos.keys.current().kid == before["next"]
        entries = repos.audit.list_recent(event_prefix="keys.rotated", limit=10)
    finally:
        store.dispose()
    assert [(e.outcome.value, e.error_code) for e in entries] == [
        ("success", None),
        ("failure", "signing_key_unavailable"),
        ("failure", "signing_key_unavailable"),
        ("success", None),
    ]
    assert "hrose" not in str(entries[1].details) and "horse" not in str(entries[1].details)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_runs_gunicorn_workers_that_answer(config_file: Path) -> None:
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "careid_broker.cli",
        "--config",
        str(config_file),
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
    ]
    log_path = config_file.parent / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREID_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        status, body = 0, b""
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.1)
        assert status == 200, log_path.read_text()
        assert b'"ok"' in body
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        status, body = _get(f"http://127.0.0.1:{port}/login")
        assert status == 200 and b"Email address" in body
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert text.count("Booting worker") == 2, text
    assert '"request_id"' in text  # JSON request lines from the workers


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((*path, name))
                found.extend(_subcommands(child, (*path, name)))
    return found


def test_every_subcommand_help_has_a_description_and_its_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = _subcommands(build_parser())
    assert ("registrations", "remove") in commands and ("check-config",) in commands
    for command in commands:
        with pytest.raises(SystemExit) as raised:
            main([*command, "--help"])
        assert raised.value.code == 0
        out = capsys.readouterr().out
        usage, _, rest = out.partition("\n\n")
        description = rest.split("\n\n", 1)[0]
        assert not description.startswith(("options:", "positional")), (command, out)
        assert len(description) > 30, (command, out)
        assert "\nExit status:\n  0  " in out or "\nExit status:\n  2  " in out, (command, out)
        assert "--config FILE" in out, (command, out)


def test_keys_reencrypt_applies_a_changed_passphrase_and_is_audited(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{config_file.parent / 'data' / 'broker.db'}"
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    store = create_store(url)
    try:
        Repositories.build(store, key_passphrase=b"old passphrase").keys.ensure_keys()
        reencrypt = ["--config", str(config_file), "keys", "reencrypt"]
        capsys.readouterr()
        # No passphrase configured: nothing to encrypt under.
        assert main(reencrypt) == 2
        assert "CAREID_OIDC_SIGNING_KEY_PASSPHRASE" in capsys.readouterr().err
        # The new passphrase alone cannot read keys made under the old one.
        monkeypatch.setenv("CAREID_OIDC_SIGNING_KEY_PASSPHRASE", "new passphrase")
        assert main(reencrypt) == 1
        refused = capsys.readouterr().err
        assert "nothing changed" in refused and "PREVIOUS_PASSPHRASE" in refused
        assert "new passphrase" not in refused  # a secret is never printed
        # With the old one as the previous passphrase, every key is re-encrypted.
        monkeypatch.setenv("CAREID_OIDC_SIGNING_KEY_PREVIOUS_PASSPHRASE", "old passphrase")
        assert main(reencrypt) == 0
        out = capsys.readouterr().out
        monkeypatch.delenv("CAREID_OIDC_SIGNING_KEY_PREVIOUS_PASSPHRASE")
        repos = Repositories.build(store, key_passphrase=b"new passphrase")
        kids = {key.kid for key in repos.keys.publishable()}
        assert all(f"re-encrypted: {kid}" in out for kid in kids)
        assert repos.keys.current().kid in kids  # loads under the new passphrase alone
        entries = repos.audit.list_recent(event_prefix="keys.reencrypted", limit=10)
    finally:
        store.dispose()
    assert [(e.outcome.value, e.error_code) for e in entries] == [
        ("success", None),
        ("failure", "signing_key_unavailable"),
    ]
    assert sorted(entries[0].details["kids"]) == sorted(kids)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "0"), ("--workers", "65"), ("--threads", "0"), ("--bind", "127.0.0.1:99999")],
)
def test_serve_options_are_held_to_the_configurations_ranges(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused as a usage error before the configuration is read: gunicorn would run a
    # master with no workers. (A file that is not there: nothing can start regardless.)
    with pytest.raises(SystemExit) as raised:
        main(["--config", str(tmp_path / "absent.toml"), "serve", option, value])
    assert raised.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
