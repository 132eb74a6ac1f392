"""The OpenID Provider over real HTTP: `careid-broker serve` (gunicorn) on a loopback port.

- a full code flow with a plain HTTP client (cookies, redirects by hand);
- an independent relying party, `openid-client` from the npm registry (tests/rp);
- two broker processes sharing one PostgreSQL database: a code issued by one is
  redeemed at the other, and one code raced at both succeeds exactly once.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from broker_support import write_broker_toml
from joserfc import jwt
from joserfc.jwk import KeySet
from oidc_process import (
    BrokerProcess,
    HttpBrowser,
    HttpResult,
    free_port,
    redeem_over_http,
    run_cli,
)
from oidc_support import ALEX, REDIRECT, RP_SECRET, write_test_clients
from sqlalchemy.engine import URL

from careid_devkit.slapd import Slapd
from support.node_rp import RP_DIR, install_openid_client, node_command

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, slapd: Slapd, database_url: str, *, issuer: str) -> Path:
    clients = write_test_clients(tmp_path / "clients.toml")
    directory: dict[str, Any] = dict(slapd.directory_settings())
    return write_broker_toml(
        tmp_path / "broker.toml",
        {
            "broker": {
                "issuer": issuer,
                "secret_key": "http-test-secret-key-0123456789-abcdefghij",
                "dev": True,
            },
            "logging": {"format": "text", "level": "WARNING"},
            "database": {"url": database_url},
            "directory": directory,
            "oidc": {"clients_file": str(clients)},
        },
    )


@pytest.fixture
def served(tmp_path: Path, demo_slapd: Slapd, store_url: str) -> Iterator[BrokerProcess]:
    """`careid-broker serve` with 2 workers on the test database (SQLite or PostgreSQL)."""
    port = free_port()
    config = _config(tmp_path, demo_slapd, store_url, issuer=f"http://127.0.0.1:{port}")
    run_cli(config, "db", "upgrade")
    broker = BrokerProcess(config, port=port, workers=2, log=tmp_path / "broker.log")
    yield broker
    broker.stop()


def _verify_id_token(base: str, id_token: str) -> dict[str, Any]:
    jwks = HttpBrowser().request(f"{base}/jwks").json()
    claims: dict[str, Any] = dict(jwt.decode(id_token, KeySet.import_key_set(jwks)).claims)
    return claims


def test_a_full_code_flow_over_http(served: BrokerProcess) -> None:
    base = served.url
    discovery = HttpBrowser().request(f"{base}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == base and discovery["token_endpoint"] == f"{base}/token"

    browser = HttpBrowser()
    code, verifier = browser.sign_in_for_code(base)
    tokens = redeem_over_http(base, code, verifier)
    assert tokens.status == 200, tokens.body
    body = tokens.json()
    claims = _verify_id_token(base, body["id_token"])
    assert claims["iss"] == base and claims["aud"] == "rp" and claims["nonce"] == "http-nonce"
    assert claims["email"] == ALEX and claims["acr"] == "AAL1_USERPASS"

    info = HttpBrowser().request(
        f"{base}/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert info.status == 200 and info.json()["sub"] == claims["sub"]
    # The second worker process serves the same grant: the state is in the store.
    again = [redeem_over_http(base, code, verifier).status for _ in range(2)]
    assert again == [400, 400]


# The independent relying party (openid-client from the npm registry).


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_openid_client_signs_in_with_pkce_and_validates_everything(
    served: BrokerProcess,
) -> None:
    command = node_command()
    install_openid_client()
    settings = {
        "issuer": served.url,
        "clientId": "rp",
        "clientSecret": RP_SECRET,
        "redirectUri": REDIRECT,
        "mail": ALEX,
        "password": "Demo-Password-1",
    }
    result = subprocess.run(
        [*command, str(RP_DIR / "rp.mjs"), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    claims = outcome["id_token_claims"]
    assert claims["iss"] == served.url and claims["aud"] == "rp"
    assert claims["acr"] == "AAL1_USERPASS" and claims["amr"] == ["pwd"]
    assert claims["nhsid_useruid"] == "555000000001"
    assert outcome["callback_iss"] == served.url
    assert outcome["token_type"].lower() == "bearer"
    userinfo = outcome["userinfo"]
    assert userinfo["sub"] == claims["sub"] and userinfo["email"] == ALEX
    # A password sign-in: no roles, whatever was asked (only AAL2 or better gives them).
    assert userinfo["nhsid_nrbac_roles"] == []


# Two broker processes, one PostgreSQL database.


@pytest.fixture
def two_brokers(
    tmp_path: Path, demo_slapd: Slapd, pg_database: URL, pg_cleaner: Callable[[], None]
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    pg_cleaner()
    url = pg_database.render_as_string(hide_password=False)
    ports = free_port(), free_port()
    # One issuer: in production both sit behind one load-balanced name.
    issuer = f"http://127.0.0.1:{ports[0]}"
    brokers: list[BrokerProcess] = []
    try:
        for index, port in enumerate(ports):
            folder = tmp_path / f"broker{index}"
            folder.mkdir()
            config = _config(folder, demo_slapd, url, issuer=issuer)
            brokers.append(BrokerProcess(config, port=port, workers=1, log=folder / "log"))
        yield brokers[0], brokers[1]
    finally:
        for broker in brokers:
            broker.stop()


def _redeem_at_once(bases: list[str], code: str, verifier: str) -> list[HttpResult]:
    """Present one code at every broker at the same moment."""
    barrier = threading.Barrier(len(bases))

    def redeem(base: str) -> HttpResult:
        barrier.wait(timeout=10)
        return redeem_over_http(base, code, verifier)

    with ThreadPoolExecutor(max_workers=len(bases)) as pool:
        return list(pool.map(redeem, bases))


@pytest.mark.postgres
def test_two_brokers_share_codes_and_a_raced_code_succeeds_once(
    two_brokers: tuple[BrokerProcess, BrokerProcess],
) -> None:
    first, second = two_brokers
    browser = HttpBrowser()
    code, verifier = browser.sign_in_for_code(first.url)
    redeemed = redeem_over_http(second.url, code, verifier)
    assert redeemed.status == 200, redeemed.body
    claims = _verify_id_token(second.url, redeemed.json()["id_token"])
    assert claims["email"] == ALEX

    for _ in range(3):
        code, verifier = browser.sign_in_for_code(first.url)
        results = _redeem_at_once([first.url, second.url], code, verifier)
        statuses = sorted(r.status for r in results)
        assert statuses == [200, 400], [r.body for r in results]
        loser = next(r for r in results if r.status == 400)
        assert loser.json()["error"] == "invalid_grant"
