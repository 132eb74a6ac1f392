"""Complete card sign-ins per second through the broker, their server-side latency, and
the in-process cost of the crypto no implementation can avoid.

One sign-in is what a relying party, a browser and the workstation agent do end to end,
over real HTTP against `careid-broker serve` (gunicorn, 2 workers): GET /authorize →
GET /login?tx (the page binds tx to the browser) → POST /card/challenge → the simulated
agent signs (a software key and certificate from the development PKI, signing exactly
as careid-agent does; no PC/SC in the loop) → POST /card/authenticate (chain, OCSP,
signature, registration, two directory reads) → GET /authorize/resume → POST /token →
GET /userinfo. Every virtual user is a new browser each time (no single sign-on).

"Server-side latency" is the sum of the HTTP round trips of one sign-in: the agent's
signing is left out (it runs on the workstation, and on real hardware the card takes
far longer than any of this). OCSP responses are cached by the broker until their
nextUpdate: the run is preceded by a warm-up, and the JSON says how many OCSP requests
the measured run still made (expected 0).

The crypto floor is measured in this process on the same machine: the token signature
check (ES256), building the chain with cryptography's verifier, and signing an RS256 ID
token — what any card sign-in costs however well the rest is written.

Backends: SQLite (a WAL file) and, when a PostgreSQL server is named by --pg-url or
CAREID_TEST_DATABASE_URL, PostgreSQL (a throwaway database, dropped afterwards).

Targets (2 cores, the bench's own clients on the same cores): at least 20 sign-ins/s,
p95 server-side latency under 500 ms, no errors.

Run: .venv/bin/python bench/card_signin.py [--signins 200] [--users 8] [--cards 12]
Prints JSON. Loopback only; needs slapd (Debian package slapd).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import verification
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from careid_broker.oidc.client_secrets import hash_secret
from careid_broker.store import LinkMode, NewRegistration, Registrations, create_store
from careid_devkit.card_profile import CardProfile
from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pki import Pki, init_pki
from careid_devkit.slapd import start_slapd
from careid_protocol.token import (
    AuthToken,
    algorithm_for_key,
    digest_to_sign,
    ecdsa_der_to_raw,
    verify_signature,
)

TARGET_SIGNINS_PER_SECOND = 20.0
TARGET_P95_MS = 500.0
CLIENT_ID = "bench"
CLIENT_SECRET = "bench-client-secret-0123456789abcdef"
REDIRECT = "https://rp.bench.test/callback"
# People who may sign in by card (active, AUP current, Care Identity active).
PEOPLE = (
    ("alex.morgan@nhs.net", "555000000001", "Alex Morgan", "alex.morgan"),
    ("lee.admin@nhs.net", "555000000004", "Lee Admin", "lee.admin"),
    ("kim.taylor@nhs.net", "555000000005", "Kim Taylor", "kim.taylor"),
)
CLI = str(Path(sys.executable).with_name("careid-broker"))
_DATA_CSRF = re.compile(r'data-csrf-token="([^"]+)"')


@dataclass(frozen=True)
class Agent:
    """A simulated agent: one card's key and certificate."""

    mail: str
    uuid: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def sign(self, origin: str, challenge: str) -> dict[str, str]:
        algorithm = algorithm_for_key(self.certificate.public_key())
        digest = digest_to_sign(origin, challenge, algorithm)
        der = self.key.sign(digest, ec.ECDSA(Prehashed(algorithm.hash())))
        return AuthToken(
            certificate=self.certificate.public_bytes(serialization.Encoding.DER),
            algorithm=algorithm,
            signature=ecdsa_der_to_raw(der, algorithm),
            agent_version="bench-agent/1",
        ).to_json()


def _agent(profile: CardProfile, mail: str) -> Agent:
    key = serialization.load_pem_private_key(profile.private_key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    certificate = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
    return Agent(mail=mail, uuid=profile.uuid, certificate=certificate, key=key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _write_config(
    folder: Path,
    *,
    port: int,
    database_url: str,
    directory: Mapping[str, Any],
    pki: Pki,
) -> Path:
    clients = folder / "clients.toml"
    clients.write_text(
        f"[clients.{CLIENT_ID}]\n"
        f'secret_hash = "{hash_secret(CLIENT_SECRET)}"\n'  # production cost: part of the flow
        f'redirect_uris = ["{REDIRECT}"]\n',
        encoding="utf-8",
    )
    sections: dict[str, Mapping[str, Any]] = {
        "broker": {
            "issuer": f"http://127.0.0.1:{port}",
            "secret_key": secrets.token_urlsafe(32),
            "dev": True,
        },
        "logging": {"format": "text", "level": "WARNING"},
        "database": {"url": database_url},
        "directory": directory,
        "oidc": {"clients_file": str(clients)},
        "card": {"link_mode": "uuid"},
        "pki": {
            "trust_anchors": [str(pki.paths.root_certificate)],
            "intermediates": [str(pki.paths.issuing_certificate)],
            "revocation": "ocsp",
        },
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    config = folder / "broker.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _register(database_url: str, agents: list[Agent]) -> None:
    """Link each person's UUID to their account (what registration leaves behind)."""
    store = create_store(database_url)
    try:
        repo = Registrations(store)
        done: set[str] = set()
        for agent in agents:
            if agent.uuid in done:
                continue  # uuid link mode: every card of a person signs in by one link
            done.add(agent.uuid)
            repo.create(
                NewRegistration(
                    card_uuid=agent.uuid,
                    account_mail=agent.mail,
                    account_dn=f"uid={agent.mail.split('@')[0]},ou=people,dc=nhs,dc=example",
                    org_code="RX1",
                    link_mode=LinkMode.UUID,
                    cert_issuer_dn=agent.certificate.issuer.rfc4514_string(),
                    cert_serial=f"{agent.certificate.serial_number:X}",
                    cert_fingerprint=agent.certificate.fingerprint(hashes.SHA256()).hex(),
                )
            )
    finally:
        store.dispose()


@contextmanager
def _broker(config: Path, *, port: int, workers: int, threads: int, log: Path) -> Iterator[str]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                CLI,
                "--config",
                str(config),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the broker did not start: {log.read_text()[-2000:]}")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        conn.close()
                        break
                except OSError:
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


class Browser:
    """One browser: a kept-alive connection, its own cookies, time spent waiting."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}
        self.waited = 0.0

    def close(self) -> None:
        self._conn.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        body_json: Any = None,
        headers: Mapping[str, str] | None = None,
        cookies: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        body: str | None = None
        if form is not None:
            body = urllib.parse.urlencode(dict(form))
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif body_json is not None:
            body = json.dumps(body_json)
            sent["Content-Type"] = "application/json"
        if cookies and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        self._conn.request(method, path, body=body, headers=sent)
        response = self._conn.getresponse()
        data = response.read()
        self.waited += time.perf_counter() - started
        if cookies:
            for line in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = line.partition("=")
                value = rest.split(";", 1)[0]
                if value:
                    self.cookies[name.strip()] = value
                else:
                    self.cookies.pop(name.strip(), None)
        return response.status, dict(response.headers), data


def _path_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def one_signin(port: int, agent: Agent) -> float:
    """A complete card sign-in; the seconds spent waiting on the broker."""
    origin = f"http://127.0.0.1:{port}"
    browser = Browser(port)
    try:
        verifier = secrets.token_urlsafe(48)
        pkce = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT,
                "scope": "openid profile email nationalrbacaccess",
                "state": secrets.token_urlsafe(8),
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": pkce.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
                "acr_values": "AAL3_ANY",
            }
        )
        status, headers, _ = browser.request("GET", f"/authorize?{query}")
        assert status == 302, f"authorize {status}"
        login = headers["Location"]
        tx = urllib.parse.parse_qs(urllib.parse.urlsplit(login).query)["tx"][0]
        status, _, page = browser.request("GET", _path_of(login))
        match = _DATA_CSRF.search(page.decode())
        assert status == 200 and match, f"login page {status}"
        script = {"Origin": origin, "X-CSRF-Token": match.group(1), "Accept": "application/json"}
        status, _, body = browser.request(
            "POST", "/card/challenge", body_json={"tx": tx}, headers=script
        )
        assert status == 200, f"challenge {status} {body[:200]!r}"
        challenge = json.loads(body)["challenge"]
        token = agent.sign(origin, challenge)  # the workstation's part: not counted
        status, _, body = browser.request(
            "POST",
            "/card/authenticate",
            body_json={"tx": tx, "challenge": challenge, "token": token},
            headers=script,
        )
        assert status == 200, f"authenticate {status} {body[:200]!r}"
        status, headers, _ = browser.request("GET", json.loads(body)["redirect"])
        assert status == 302 and headers["Location"].startswith(REDIRECT), f"resume {status}"
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["code"][0]
        auth = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        status, _, body = browser.request(
            "POST",
            "/token",
            cookies=False,
            headers={"Authorization": f"Basic {auth}"},
            form={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
        )
        assert status == 200, f"token {status} {body[:200]!r}"
        access_token = json.loads(body)["access_token"]
        status, _, body = browser.request(
            "GET", "/userinfo", cookies=False, headers={"Authorization": f"Bearer {access_token}"}
        )
        assert status == 200 and json.loads(body)["nhsid_useruid"] == agent.uuid, "userinfo"
        return browser.waited
    finally:
        browser.close()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def pct(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)

    return {
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
        "mean": round(statistics.fmean(ordered) * 1000, 1) if ordered else None,
    }


def run_load(
    port: int, agents: list[Agent], *, signins: int, users: int, ocsp: PkiServer
) -> dict[str, Any]:
    """`signins` sign-ins shared among `users` threads; throughput and latency."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(signins))

    def user(index: int) -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            try:
                waited = one_signin(port, agents[(n + index) % len(agents)])
            except (AssertionError, OSError, KeyError, ValueError) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                latencies.append(waited)

    # Warm-up: keys, pools, and each card's OCSP answer cached in every worker. Which
    # worker takes a connection is the kernel's choice: go round the cards until a
    # whole round needs no OCSP request (or give up and let the JSON say so).
    quiet_rounds = 0
    for _ in range(12):
        before = ocsp.ocsp_requests_served
        for agent in agents * 2:
            one_signin(port, agent)
        quiet_rounds = quiet_rounds + 1 if ocsp.ocsp_requests_served == before else 0
        if quiet_rounds == 2:
            break
    ocsp_before = ocsp.ocsp_requests_served
    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    rate = len(latencies) / elapsed if elapsed else 0.0
    latency = _percentiles(latencies)
    p95 = latency["p95"]
    return {
        "signins": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:3],
        "duration_s": round(elapsed, 2),
        "signins_per_second": round(rate, 1),
        "server_side_latency_ms": latency,
        "ocsp_requests_during_run": ocsp.ocsp_requests_served - ocsp_before,
        "meets_target": bool(
            not errors
            and rate >= TARGET_SIGNINS_PER_SECOND
            and p95 is not None
            and p95 < TARGET_P95_MS
        ),
    }


def _timed(operation: Callable[[], object], rounds: int) -> float:
    """Median milliseconds per call over `rounds` calls (after one to warm up)."""
    operation()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 3)


def crypto_floor(pki: Pki, agent: Agent, *, rounds: int = 200) -> dict[str, float]:
    """The unavoidable crypto of one card sign-in, measured in this process."""
    origin = "https://broker.bench.test"
    challenge = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    token_json = agent.sign(origin, challenge)
    token = AuthToken(
        certificate=base64.b64decode(token_json["certificate"]),
        algorithm=algorithm_for_key(agent.certificate.public_key()),
        signature=base64.b64decode(token_json["signature"]),
        agent_version="bench",
    )
    store = verification.Store([pki.root_certificate])
    policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None
    )
    policy = policy.may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )

    def chain() -> object:
        verifier = (
            verification.PolicyBuilder()
            .store(store)
            .time(datetime.now(UTC))
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=policy
            )
            .build_client_verifier()
        )
        return verifier.verify(agent.certificate, [pki.issuing_certificate])

    rsa_key = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    claims = {
        "iss": origin,
        "sub": secrets.token_urlsafe(16),
        "aud": CLIENT_ID,
        "iat": int(time.time()),
        "exp": int(time.time()) + 300,
        "nonce": "n",
        "acr": "AAL3_SMARTCARD",
        "amr": ["sc", "pin", "hwk"],
        "sid": secrets.token_hex(24),
        "nhsid_useruid": agent.uuid,
    }
    signature_ms = _timed(
        lambda: verify_signature(token, agent.certificate, origin, challenge), rounds
    )
    chain_ms = _timed(chain, rounds)
    id_token_ms = _timed(lambda: jwt.encode({"alg": "RS256", "kid": "k"}, claims, rsa_key), rounds)
    return {
        "signature_verify_es256_ms": signature_ms,
        "chain_build_ms": chain_ms,
        "id_token_sign_rs256_ms": id_token_ms,
        "total_ms": round(signature_ms + chain_ms + id_token_ms, 3),
    }


@contextmanager
def _pg_database(admin_url: str) -> Iterator[str]:
    server = make_url(admin_url)
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"careid_bench_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _database_for(backend: str, folder: Path, pg_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'broker.db'}"
        return
    assert pg_url is not None
    with _pg_database(pg_url) as url:
        yield url


def _issue_agents(pki: Pki, count: int) -> list[Agent]:
    """`count` cards spread over the people (several cards per UUID: renewed cards)."""
    agents = []
    for n in range(count):
        mail, uuid, name, _ = PEOPLE[n % len(PEOPLE)]
        profile = pki.issue_card(uuid=uuid, name=name, algorithm="p256", pin="123456")
        agents.append(_agent(profile, mail))
    return agents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signins", type=int, default=200)
    parser.add_argument("--users", type=int, default=8, help="simulated browsers at once")
    parser.add_argument("--cards", type=int, default=12, help="simulated agents (cards)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--pg-url", default=os.environ.get("CAREID_TEST_DATABASE_URL"))
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="careid-bench-card-") as raw:
        folder = Path(raw)
        slapd = start_slapd(folder / "slapd")
        init_pki(folder / "pki", now=datetime.now(UTC) - timedelta(days=1))
        ocsp = start_pki_server(folder / "pki", "127.0.0.1", 0)
        try:
            pki = init_pki(
                folder / "pki",
                base_url=ocsp.url,
                now=datetime.now(UTC) - timedelta(days=1),
                force=True,
            )
            agents = _issue_agents(pki, args.cards)
            floor = crypto_floor(pki, agents[0])
            backends: list[str] = []
            if args.backend in ("sqlite", "both"):
                backends.append("sqlite")
            if args.backend in ("postgresql", "both"):
                if args.pg_url:
                    backends.append("postgresql")
                elif args.backend == "postgresql":
                    parser.error("PostgreSQL needs --pg-url or CAREID_TEST_DATABASE_URL")
            for backend in backends:
                run_dir = folder / backend
                run_dir.mkdir()
                port = _free_port()
                with _database_for(backend, run_dir, args.pg_url) as url:
                    config = _write_config(
                        run_dir,
                        port=port,
                        database_url=url,
                        directory=slapd.directory_settings(),
                        pki=pki,
                    )
                    subprocess.run(
                        [CLI, "--config", str(config), "db", "upgrade"],
                        check=True,
                        capture_output=True,
                    )
                    _register(url, agents)
                    with _broker(
                        config,
                        port=port,
                        workers=args.workers,
                        threads=args.threads,
                        log=run_dir / "log",
                    ):
                        outcome = run_load(
                            port, agents, signins=args.signins, users=args.users, ocsp=ocsp
                        )
                results.append({"backend": backend, **outcome})
        finally:
            ocsp.close()
            slapd.stop()
    print(
        json.dumps(
            {
                "benchmark": "card_signin",
                "flow": (
                    "authorize, login page, card challenge, (agent signs), card authenticate"
                    " (chain, OCSP cached, signature, registration, directory), resume,"
                    " token, userinfo"
                ),
                "server": (
                    f"careid-broker serve, {args.workers} gunicorn workers x {args.threads} threads"
                ),
                "virtual_users": args.users,
                "simulated_agents": args.cards,
                "cpu_count": os.cpu_count(),
                "target": {
                    "signins_per_second_at_least": TARGET_SIGNINS_PER_SECOND,
                    "p95_server_side_ms_below": TARGET_P95_MS,
                },
                "crypto_floor_per_signin": floor,
                "results": results,
            },
            indent=2,
        )
    )
    return 0 if results and all(r["meets_target"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
