"""Complete password sign-ins per second through the OpenID Provider, and their latency.

One sign-in is what a relying party and a browser do end to end, over real HTTP against
`careid-broker serve` (gunicorn, 2 workers): GET /authorize → GET /login → POST /login
(an LDAP bind as the user against a real slapd, plus the directory checks) → GET
/authorize/resume → POST /token (client_secret_basic, PKCE) → GET /userinfo. Each
virtual user is a new browser for every sign-in (its own cookies, no single sign-on),
so every iteration pays for the password check; connections are kept alive as a
browser's would be.

Backends: SQLite (a WAL file) and, when a PostgreSQL server is named by --pg-url or
CAREID_TEST_DATABASE_URL, PostgreSQL (a throwaway database, dropped afterwards).

Target (on 2 cores, LDAP binds included): at least 20 sign-ins/s with p95 under 500 ms.

Run: .venv/bin/python bench/oidc_password_flow.py [--signins 200] [--users 8]
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from careid_broker.oidc.client_secrets import hash_secret
from careid_devkit.slapd import start_slapd

TARGET_SIGNINS_PER_SECOND = 20.0
TARGET_P95_MS = 500.0
CLIENT_ID = "bench"
CLIENT_SECRET = "bench-client-secret-0123456789abcdef"
REDIRECT = "https://rp.bench.test/callback"
PASSWORD = "Demo-Password-1"
# Accounts that may sign in (active, AUP current): spread the load as a ward would.
ACCOUNTS = ("alex.morgan@nhs.net", "lee.admin@nhs.net", "kim.taylor@nhs.net")
CLI = str(Path(sys.executable).with_name("careid-broker"))
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


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
    folder: Path, *, port: int, database_url: str, directory: Mapping[str, Any]
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
        # Many sign-ins from one address in a short time is the point of a benchmark.
        "signin": {"address_free_failures": 10000},
        "oidc": {"clients_file": str(clients)},
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    config = folder / "broker.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@contextmanager
def _broker(config: Path, *, port: int, workers: int, threads: int, log: Path) -> Iterator[str]:
    subprocess.run([CLI, "--config", str(config), "db", "upgrade"], check=True, capture_output=True)
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
    """One browser: a kept-alive connection and its own cookies."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def close(self) -> None:
        self._conn.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(dict(form))
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if cookies and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self._conn.request(method, path, body=body, headers=sent)
        response = self._conn.getresponse()
        data = response.read()
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


def one_signin(port: int, mail: str) -> None:
    """A complete sign-in; raises on anything unexpected."""
    browser = Browser(port)
    try:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT,
                "scope": "openid profile email nationalrbacaccess",
                "state": secrets.token_urlsafe(8),
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        status, headers, _ = browser.request("GET", f"/authorize?{query}")
        assert status == 302, f"authorize {status}"
        login = headers["Location"]
        status, _, page = browser.request("GET", _path_of(login))
        match = _CSRF.search(page.decode())
        assert status == 200 and match, f"login page {status}"
        tx = urllib.parse.parse_qs(urllib.parse.urlsplit(login).query)["tx"][0]
        status, headers, _ = browser.request(
            "POST",
            "/login",
            form={"csrf_token": match.group(1), "tx": tx, "email": mail, "password": PASSWORD},
        )
        assert status in (302, 303), f"sign-in {status}"
        status, headers, _ = browser.request("GET", _path_of(headers["Location"]))
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
        assert status == 200 and json.loads(body)["email"] == mail, f"userinfo {status}"
    finally:
        browser.close()


def run_load(port: int, *, signins: int, users: int) -> dict[str, Any]:
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
            started = time.perf_counter()
            try:
                one_signin(port, ACCOUNTS[(n + index) % len(ACCOUNTS)])
            except (AssertionError, OSError, KeyError, ValueError) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    for warm in range(users):  # the first requests of each worker load keys and pools
        one_signin(port, ACCOUNTS[warm % len(ACCOUNTS)])
    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        if not ordered:
            return float("nan")
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)

    rate = len(latencies) / elapsed if elapsed else 0.0
    return {
        "signins": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:3],
        "duration_s": round(elapsed, 2),
        "signins_per_second": round(rate, 1),
        "latency_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "mean": round(statistics.fmean(ordered) * 1000, 1) if ordered else None,
        },
        "meets_target": bool(
            not errors and rate >= TARGET_SIGNINS_PER_SECOND and pct(95) < TARGET_P95_MS
        ),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signins", type=int, default=200)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--pg-url", default=os.environ.get("CAREID_TEST_DATABASE_URL"))
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="careid-bench-") as raw:
        folder = Path(raw)
        slapd = start_slapd(folder / "slapd")
        try:
            directory = slapd.directory_settings()
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
                        run_dir, port=port, database_url=url, directory=directory
                    )
                    with _broker(
                        config,
                        port=port,
                        workers=args.workers,
                        threads=args.threads,
                        log=run_dir / "log",
                    ):
                        outcome = run_load(port, signins=args.signins, users=args.users)
                results.append({"backend": backend, **outcome})
        finally:
            slapd.stop()
    print(
        json.dumps(
            {
                "benchmark": "oidc_password_flow",
                "flow": "authorize, login page, password POST (LDAP bind), resume, token, userinfo",
                "server": (
                    f"careid-broker serve, {args.workers} gunicorn workers x {args.threads} threads"
                ),
                "virtual_users": args.users,
                "cpu_count": os.cpu_count(),
                "target": {
                    "signins_per_second_at_least": TARGET_SIGNINS_PER_SECOND,
                    "p95_ms_below": TARGET_P95_MS,
                },
                "results": results,
            },
            indent=2,
        )
    )
    return 0 if results and all(r["meets_target"] for r in results) else 1


@contextmanager
def _database_for(backend: str, folder: Path, pg_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'broker.db'}"
        return
    assert pg_url is not None
    with _pg_database(pg_url) as url:
        yield url


if __name__ == "__main__":
    sys.exit(main())
