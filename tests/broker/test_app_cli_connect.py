"""`careid-broker check-config --connect`: each part asked, and each failure told apart.

Against a real slapd and the devkit's real OCSP/CRL server on 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_support import TEST_SECRET_KEY, write_broker_toml

from careid_broker.cli import main
from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pki import init_pki
from careid_devkit.slapd import Slapd

WRONG_PASSWORD = "Not-The-Service-Password-7"  # noqa: S105 - a test value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(
    folder: Path,
    slapd: Slapd,
    clients_file: Path,
    *,
    directory: dict[str, object] | None = None,
    pki: dict[str, dict[str, object]] | None = None,
) -> Path:
    sections: dict[str, dict[str, object]] = {
        "broker": {
            "issuer": "http://localhost:5000",
            "secret_key": TEST_SECRET_KEY,
            "dev": True,
            "dev_disable_workers": True,
        },
        "database": {"url": "sqlite:///broker.db"},
        "directory": slapd.directory_settings(
            connect_timeout=1.0, receive_timeout=1.0, **(directory or {})
        ),
        "oidc": {"clients_file": str(clients_file)},
        **(pki or {}),
    }
    path = write_broker_toml(folder / "broker.toml", sections)
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    return path


@pytest.fixture(scope="module")
def pki_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PkiServer, Path]]:
    """The devkit's development PKI, and its OCSP/CRL server on a free port."""
    folder = tmp_path_factory.mktemp("check-config-pki") / "pki"
    init_pki(folder)
    with start_pki_server(folder, "127.0.0.1", 0) as server:
        yield server, folder


def _pki(folder: Path, responder_url: str) -> dict[str, dict[str, object]]:
    return {
        "pki": {
            "trust_anchors": [str(folder / "root-ca.pem")],
            "intermediates": [str(folder / "issuing-ca.pem")],
            "revocation": "ocsp",
        },
        "pki.ocsp": {"responder_url": responder_url, "timeout_seconds": 2},
    }


def test_connect_passes_and_says_what_it_asked(
    tmp_path: Path,
    demo_slapd: Slapd,
    clients_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, demo_slapd, clients_file)
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--connect"]) == 0
    out = capsys.readouterr().out
    assert "ok: database sqlite:///" in out and "schema current" in out
    assert f"ok: directory {demo_slapd.url}: the service account" in out
    assert "binds and reads the configured bases" in out
    assert "connection checks passed" in out.splitlines()[-1]


def test_connect_names_a_refused_bind_apart_from_an_unreachable_server(
    tmp_path: Path,
    demo_slapd: Slapd,
    clients_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = {"bind_password": WRONG_PASSWORD}
    config = _config(tmp_path, demo_slapd, clients_file, directory=wrong)
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--connect"]) == 1
    captured = capsys.readouterr()
    assert f"problem: directory {demo_slapd.url}: refused the bind as the service account" in (
        captured.err
    )
    assert f"{demo_slapd.service_bind_dn!r}: invalidCredentials" in captured.err
    assert "DN or its password is wrong" in captured.err
    assert "does not answer" not in captured.err and "cannot be reached" not in captured.err
    assert WRONG_PASSWORD not in captured.out + captured.err

    down = f"ldap://127.0.0.1:{_closed_port()}"
    config = _config(tmp_path, demo_slapd, clients_file, directory={"urls": [down]})
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--connect"]) == 1
    err = capsys.readouterr().err
    assert f"problem: directory {down}: cannot be reached" in err
    assert "invalidCredentials" not in err


def test_connect_names_a_failing_search(
    tmp_path: Path,
    demo_slapd: Slapd,
    clients_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(
        tmp_path,
        demo_slapd,
        clients_file,
        directory={"care_identities_base": "ou=nowhere,dc=nhs,dc=example"},
    )
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--connect"]) == 1
    err = capsys.readouterr().err
    assert "binds, but a search failed" in err and "ou=nowhere" in err


def test_connect_asks_the_ocsp_responder_pki_names(
    tmp_path: Path,
    demo_slapd: Slapd,
    clients_file: Path,
    pki_server: tuple[PkiServer, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, folder = pki_server
    answering = f"{server.url}/ocsp"
    config = _config(tmp_path, demo_slapd, clients_file, pki=_pki(folder, answering))
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--connect"]) == 0
    out = capsys.readouterr().out
    assert f"ok: OCSP responder {answering} ([pki.ocsp] responder_url): answers" in out

    silent = f"http://127.0.0.1:{_closed_port()}/ocsp"
    config = _config(tmp_path, demo_slapd, clients_file, pki=_pki(folder, silent))
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--connect"]) == 1
    err = capsys.readouterr().err
    assert f"problem: OCSP responder {silent} ([pki.ocsp] responder_url): does not answer" in err
    assert "1 connection check of" in err
