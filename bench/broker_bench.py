"""What the broker sign-in benchmarks share: a real `careid-broker serve` on a throwaway
database, a browser over real HTTP, the OIDC legs around the sign-in step, virtual
users, and the report.

Each bench (password, card) keeps its own sign-in step, warm-up and JSON header; this
module holds everything before and after that step so both measure the same way.
Imported as a plain module: `python bench/X.py` puts this folder on sys.path.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from careid_broker.oidc.client_secrets import hash_secret

#: The targets a bench can judge on its own (8 users, 2 cores): every sign-in's p95
#: latency, and a card sign-in's broker CPU. The rates' targets are ratios to
#: node-oidc-provider measured in the same run, so only `peer_compare.py` judges them.
TARGET_P95_MS = 60.0
TARGET_CARD_CPU_MS = 5.0
RATE_TARGETS = {
    "password_ratio_at_least": 0.5,
    "card_ratio_at_least": 0.4,
}
RATE_TARGETS_NOTE = (
    "rates are judged against node-oidc-provider in the same run: bench/peer_compare.py"
)
CLIENT_ID = "bench"
CLIENT_SECRET = "bench-client-secret-0123456789abcdef"
REDIRECT = "https://rp.bench.test/callback"
# The client the peer benchmark's driver (../shared/peer-bench/drive.py) signs in with:
# its own defaults for the redirect URI and the ID token algorithm.
PEER_CLIENT_ID = "peerbench"
PEER_CLIENT_SECRET = "peerbench-client-secret-0123456789abcdef"
PEER_REDIRECT = "http://127.0.0.1:9/cb"
CLI = str(Path(sys.executable).with_name("careid-broker"))
# What a sign-in may raise when the broker misbehaves: counted as an error, not fatal.
SIGNIN_FAILURES = (AssertionError, OSError, KeyError, ValueError)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
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


def write_config(
    folder: Path,
    *,
    port: int,
    database_url: str,
    directory: Mapping[str, Any],
    extra_sections: Mapping[str, Mapping[str, Any]],
) -> Path:
    """broker.toml (and the bench client's clients.toml) in `folder`; its path."""
    clients = folder / "clients.toml"
    clients.write_text(
        f"[clients.{CLIENT_ID}]\n"
        f'secret_hash = "{hash_secret(CLIENT_SECRET)}"\n'  # production cost: part of the flow
        f'redirect_uris = ["{REDIRECT}"]\n'
        f"\n[clients.{PEER_CLIENT_ID}]\n"
        f'secret_hash = "{hash_secret(PEER_CLIENT_SECRET)}"\n'
        f'redirect_uris = ["{PEER_REDIRECT}"]\n'
        'id_token_signed_response_alg = "ES256"\n',
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
        **extra_sections,
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    config = folder / "broker.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _stat_fields(pid: int) -> list[str]:
    # "pid (comm) state ppid …": comm may hold spaces, so split after its ")".
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def process_cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """user + system CPU seconds of `pid` (and of its live children), 0 for one gone."""
    total = 0.0
    for one in (pid, *(children(pid) if with_children else ())):
        try:
            fields = _stat_fields(one)
        except OSError:
            continue
        # After the command name: state is field 3, utime 14 and stime 15 (1-based).
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass(frozen=True, kw_only=True)
class Server:
    """A running broker: its port, and its processes' CPU time so far."""

    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """CPU seconds used by the gunicorn master and its live workers."""
        return process_cpu_seconds(self.pid, with_children=True)

    def counters(self) -> dict[str, float]:
        """The broker's counters from /metrics (summed over its workers), by sample."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read().decode()
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
        finally:
            conn.close()
        return parse_metrics(body)


def parse_metrics(body: str) -> dict[str, float]:
    """A Prometheus text exposition's samples by name and labels (no `_created`)."""
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        sample, _, value = line.rpartition(" ")
        if sample.endswith("_created"):
            continue
        values[sample] = float(value)
    return values


#: What `work_per_signin` reports, from the broker's own counters.
WORK_COUNTERS = {
    "db_write_transactions": 'careid_store_transactions_total{kind="write"}',
    "db_read_transactions": 'careid_store_transactions_total{kind="read"}',
    "db_statements": "careid_store_statements_total",
    "directory_connects": 'careid_directory_requests_total{operation="connect"}',
    "directory_binds": 'careid_directory_requests_total{operation="bind"}',
    "directory_searches": 'careid_directory_requests_total{operation="search"}',
    "directory_unbinds": 'careid_directory_requests_total{operation="unbind"}',
}


@dataclass(kw_only=True)
class WorkMeter:
    """The server's CPU time and counted work between `start()` and `report(n)`."""

    server: Server
    cpu: float = 0.0
    counts: dict[str, float] | None = None

    def start(self) -> None:
        self.cpu = self.server.cpu_seconds()
        self.counts = self.server.counters()

    def report(self, signins: int) -> dict[str, Any]:
        """CPU ms and round trips per sign-in (the counters' scrape itself included)."""
        cpu = self.server.cpu_seconds() - self.cpu
        after = self.server.counters()
        before = self.counts or {}
        per = max(signins, 1)
        work = {
            name: round((after.get(key, 0.0) - before.get(key, 0.0)) / per, 2)
            for name, key in WORK_COUNTERS.items()
        }
        return {"server_cpu_ms_per_signin": round(cpu * 1000 / per, 2), "work_per_signin": work}


@contextmanager
def serve(config: Path, *, port: int, workers: int, threads: int, log: Path) -> Iterator[Server]:
    """`careid-broker serve` on 127.0.0.1:`port` until the block ends."""
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
            yield Server(port=port, pid=process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def throwaway_postgres(admin_url: str) -> Iterator[str]:
    """A fresh database on the server `admin_url` names, dropped afterwards; its URL."""
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
    with throwaway_postgres(pg_url) as url:
        yield url


@dataclass(frozen=True, kw_only=True)
class BrokerSetup:
    """How to run the broker under test: its server, directory and bench-specific config."""

    workers: int
    threads: int
    pg_url: str | None
    directory: Mapping[str, Any]
    extra_sections: Mapping[str, Mapping[str, Any]]
    # Runs against the migrated database before the broker starts (e.g. registrations).
    prepare: Callable[[str], None] | None = None


def password_setup(args: argparse.Namespace, directory: Mapping[str, Any]) -> BrokerSetup:
    """The broker for password sign-ins from one address (the bench's), against
    `directory`: the per-address throttle is set out of reach, since many sign-ins from
    one address in a short time is the point of a benchmark."""
    return BrokerSetup(
        workers=args.workers,
        threads=args.threads,
        pg_url=args.pg_url,
        directory=directory,
        extra_sections={"signin": {"address_free_failures": 10000}},
    )


@contextmanager
def running_broker(backend: str, folder: Path, setup: BrokerSetup) -> Iterator[Server]:
    """The broker on `backend`'s own database in `folder`/`backend`."""
    run_dir = folder / backend
    run_dir.mkdir()
    port = free_port()
    with _database_for(backend, run_dir, setup.pg_url) as url:
        config = write_config(
            run_dir,
            port=port,
            database_url=url,
            directory=setup.directory,
            extra_sections=setup.extra_sections,
        )
        subprocess.run(
            [CLI, "--config", str(config), "db", "upgrade"], check=True, capture_output=True
        )
        if setup.prepare is not None:
            setup.prepare(url)
        with serve(
            config,
            port=port,
            workers=setup.workers,
            threads=setup.threads,
            log=run_dir / "log",
        ) as server:
            yield server


class Browser:
    """One browser: a kept-alive connection, its own cookies, time spent waiting."""

    def __init__(self, port: int) -> None:
        self.origin = f"http://127.0.0.1:{port}"
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
        # Header names as browsers read them, whatever case the server (or a proxy such
        # as HAProxy, which lower-cases them) sent: "Location", "Set-Cookie".
        return response.status, {k.title(): v for k, v in response.headers.items()}, data


def path_of(url: str) -> str:
    """The path and query of `url`, as sent on the request line."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def query_value(url: str, name: str) -> str:
    """The first `name` parameter of `url`'s query (KeyError when absent)."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)[name][0]


@dataclass(frozen=True, kw_only=True)
class Authorization:
    """A started authorization: where the login page is, its tx, the PKCE verifier."""

    login_url: str
    tx: str
    verifier: str


def authorization_request(extra: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The bench client's /authorize query (PKCE S256), and its code verifier."""
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
            **(extra or {}),
        }
    )
    return query, verifier


def authorize(browser: Browser, *, extra: Mapping[str, str] | None = None) -> Authorization:
    """GET /authorize as the relying party sends the browser (PKCE S256)."""
    query, verifier = authorization_request(extra)
    status, headers, _ = browser.request("GET", f"/authorize?{query}")
    assert status == 302, f"authorize {status}"
    login = headers["Location"]
    return Authorization(login_url=login, tx=query_value(login, "tx"), verifier=verifier)


def finish_signin(browser: Browser, authorization: Authorization, answer: str) -> dict[str, Any]:
    """Redeem the code the sign-in's answer sent the browser back to the RP with, and
    return the userinfo claims."""
    assert answer.startswith(REDIRECT), f"sign-in answered {answer[:80]!r}, not the RP"
    code = query_value(answer, "code")
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
            "code_verifier": authorization.verifier,
        },
    )
    assert status == 200, f"token {status} {body[:200]!r}"
    access_token = json.loads(body)["access_token"]
    status, _, body = browser.request(
        "GET", "/userinfo", cookies=False, headers={"Authorization": f"Bearer {access_token}"}
    )
    assert status == 200, f"userinfo {status}"
    claims: dict[str, Any] = json.loads(body)
    return claims


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean of `values` (seconds) in milliseconds; None when there are none."""
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


@dataclass(frozen=True, kw_only=True)
class LoadOutcome:
    """What the virtual users did: each sign-in's latency (s), the failures, the wall time."""

    latencies: tuple[float, ...]
    errors: tuple[str, ...]
    elapsed: float

    def report(
        self,
        *,
        latency_key: str,
        extra: Mapping[str, Any] | None = None,
        cpu_target_ms: float | None = None,
    ) -> dict[str, Any]:
        """The per-backend JSON result, judged against the targets a bench can judge
        alone: no errors, p95 under `TARGET_P95_MS`, and (with `cpu_target_ms`) the
        broker's CPU per sign-in (`extra`'s `server_cpu_ms_per_signin`) under it."""
        rate = len(self.latencies) / self.elapsed if self.elapsed else 0.0
        latency = percentiles(list(self.latencies))
        p95 = latency["p95"]
        extra = dict(extra or {})
        met = {
            "no_errors": not self.errors and bool(self.latencies),
            "p95_ms_below": p95 is not None and p95 < TARGET_P95_MS,
        }
        if cpu_target_ms is not None:
            cpu = extra.get("server_cpu_ms_per_signin")
            met["server_cpu_ms_per_signin_below"] = cpu is not None and cpu < cpu_target_ms
        return {
            "signins": len(self.latencies),
            "errors": len(self.errors),
            "error_samples": list(self.errors[:3]),
            "duration_s": round(self.elapsed, 2),
            "signins_per_second": round(rate, 1),
            latency_key: latency,
            **extra,
            "targets_met": met,
            "meets_target": all(met.values()),
        }


def run_users(signin: Callable[[int], float], *, signins: int, users: int) -> LoadOutcome:
    """`signins` calls of `signin(slot)` shared among `users` threads.

    `slot` spreads the users over the bench's accounts or cards; `signin` returns the
    latency to record, and a failure it raises is counted rather than stopping the run.
    """
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
                latency = signin(n + index)
            except SIGNIN_FAILURES as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return LoadOutcome(latencies=tuple(latencies), errors=tuple(errors), elapsed=elapsed)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--signins and --users."""
    parser.add_argument("--signins", type=int, default=200)
    parser.add_argument("--users", type=int, default=8, help="simulated browsers at once")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --threads, --pg-url and --backend."""
    # The defaults of `careid-broker serve` ([server] in config/broker.toml).
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--pg-url", default=os.environ.get("CAREID_TEST_DATABASE_URL"))
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")


def select_backends(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The backends to measure; PostgreSQL only when a server is named (required if asked)."""
    backends: list[str] = []
    if args.backend in ("sqlite", "both"):
        backends.append("sqlite")
    if args.backend in ("postgresql", "both"):
        if args.pg_url:
            backends.append("postgresql")
        elif args.backend == "postgresql":
            parser.error("PostgreSQL needs --pg-url or CAREID_TEST_DATABASE_URL")
    return backends


def server_label(args: argparse.Namespace) -> str:
    """The report's description of the server under test."""
    return f"careid-broker serve, {args.workers} gunicorn workers x {args.threads} threads"


def emit(report: Mapping[str, Any]) -> int:
    """Print the report as JSON; exit status 0 only if every backend met the targets."""
    print(json.dumps(report, indent=2))
    results = report["results"]
    return 0 if results and all(r["meets_target"] for r in results) else 1
