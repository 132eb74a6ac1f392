"""Sign-ins per second with one broker instance and with two behind HAProxy, on one
PostgreSQL database, on this machine: what scaling out gains, and what it costs.

Both runs go through Debian's HAProxy (round robin, no stickiness, the configuration of
`careid_devkit.haproxy`): first with one instance as its only upstream, then with a
second instance added, each `careid-broker serve` with --workers and --threads. The
instances share the database, the directory (a slapd of the bench's own), the secret
key and the issuer (HAProxy's URL), as a trust's would.

One sign-in is what a relying party, a browser and the agent do end to end, over real
HTTP: GET /authorize → GET /login → either POST /login (an LDAP bind) or POST
/card/challenge, the simulated agent signs, POST /card/authenticate (chain, OCSP cached,
signature, registration, directory, code) → POST /token → GET /userinfo. Virtual
users alternate password and card (--method to choose one); every sign-in is a new
browser (no single sign-on).

Each run is --warmup seconds of load (not counted), then --seconds measured: sign-ins
completed in that window per second, their latency, the errors, and each instance's
CPU seconds per sign-in (gunicorn master and workers, from /proc), HAProxy's, that of
the PostgreSQL backends serving the bench's database (when the server is on this
machine), and how busy the whole machine was. The ratio (two instances ÷ one) shows what the shared
database and the serialised audit append cost once the instances are not short of CPU:
on a machine where everything shares the same cores the second instance brings no new
CPU, and the ratio mostly says so (see the note in the JSON).

Target: no errors, and two instances at least 0.8× one instance's rate on the same
machine (adding an instance must not slow sign-ins down: that would be contention in the
database or the audit lock).

Run: .venv/bin/python bench/load_balanced.py [--seconds 20] [--users 8] [--pg-url URL]
Prints JSON. Loopback only; needs slapd, haproxy and PostgreSQL (--pg-url or
CAREID_TEST_DATABASE_URL; a throwaway database is created there and dropped).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from broker_bench import (
    CLI,
    SIGNIN_FAILURES,
    free_port,
    percentiles,
    process_cpu_seconds,
    throwaway_postgres,
    write_config,
)
from card_signin import Agent, card_settings, development_pki, register_agents
from card_signin import one_signin as card_signin
from careid_broker.store import upgrade
from careid_devkit.haproxy import Haproxy, Upstream, haproxy_binary, start_haproxy
from careid_devkit.pki import Pki
from careid_devkit.slapd import start_slapd
from oidc_password_flow import one_signin as password_signin

MIN_RATIO = 0.8
# People who may sign in both ways (active, AUP current, Care Identity active).
PEOPLE = (
    ("alex.morgan@nhs.net", "555000000001", "Alex Morgan"),
    ("lee.admin@nhs.net", "555000000004", "Lee Admin"),
    ("kim.taylor@nhs.net", "555000000005", "Kim Taylor"),
)


# Processes and CPU time, from /proc.


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


class DatabaseBackends:
    """CPU time of the PostgreSQL backends serving the bench's database, when the
    server runs on this machine (its processes are in /proc); None otherwise."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.local = url.host in ("127.0.0.1", "localhost", "::1", None)
        self._engine = create_engine(url)

    def cpu_by_pid(self) -> dict[int, float]:
        if not self.local:
            return {}
        with self._engine.connect() as conn:
            pids = conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        return {pid: process_cpu_seconds(pid) for pid in pids}

    def close(self) -> None:
        self._engine.dispose()


def backend_cpu_seconds(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the backends used between two samples (a backend new since `before` from 0;
    one closed before `after` is not counted: pooled connections mostly stay open)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass
class Instance:
    """`careid-broker serve` on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid, with_children=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_instance(name: str, config: Path, *, port: int, args: argparse.Namespace) -> Instance:
    """Start an instance and wait for /healthz."""
    log = config.with_name("log").open("ab")
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [CLI, "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    instance = Instance(name=name, port=port, process=process)
    deadline = time.monotonic() + 60
    while not _answers_healthz(port):
        if process.poll() is not None or time.monotonic() > deadline:
            instance.stop()
            tail = config.with_name("log").read_text()[-2000:]
            raise RuntimeError(f"{name} did not start: {tail}")
        time.sleep(0.1)
    return instance


def _answers_healthz(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


# One measured run: the flows are the single-instance benches' own (oidc_password_flow,
# card_signin), through the load balancer.


@dataclass
class Samples:
    """What the virtual users did: (start, end, method) of each sign-in, and failures."""

    done: list[tuple[float, float, str]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def measure(
    lb: Haproxy,
    instances: list[Instance],
    agents: list[Agent],
    database: DatabaseBackends,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """--warmup then --seconds of load through `lb`; the run's figures."""
    samples = Samples()
    stop = threading.Event()
    methods = ("password", "card") if args.method == "mixed" else (args.method,)

    def user(index: int) -> None:
        n = index
        while not stop.is_set():
            method = methods[n % len(methods)]
            agent = agents[n % len(agents)]
            n += 1
            started = time.perf_counter()
            try:
                if method == "password":
                    password_signin(lb.port, agent.mail)
                else:
                    card_signin(lb.port, agent)
            except SIGNIN_FAILURES as exc:
                with samples.lock:
                    samples.failed.append(
                        (time.perf_counter(), f"{type(exc).__name__}: {exc}"[:200])
                    )
                continue
            with samples.lock:
                samples.done.append((started, time.perf_counter(), method))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(args.users)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(args.warmup)
        cpu_before = {i.name: i.cpu_seconds() for i in instances}
        lb_before = process_cpu_seconds(lb.pid)
        database_before = database.cpu_by_pid()
        machine_before = machine_ticks()
        window_start = time.perf_counter()
        time.sleep(args.seconds)
        window_end = time.perf_counter()
        cpu_after = {i.name: i.cpu_seconds() for i in instances}
        lb_after = process_cpu_seconds(lb.pid)
        database_after = database.cpu_by_pid()
        machine_after = machine_ticks()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)

    counted = [s for s in samples.done if window_start <= s[1] < window_end]
    errors = [f for f in samples.failed if window_start <= f[0] < window_end]
    signins = max(len(counted), 1)
    busy = machine_after[0] - machine_before[0]
    ticks = machine_after[1] - machine_before[1]
    per_instance = {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_before}
    latency = percentiles([end - start for start, end, _ in counted])
    return {
        "instances": len(instances),
        "signins": len(counted),
        "by_method": {m: sum(1 for s in counted if s[2] == m) for m in methods},
        "duration_s": round(window_end - window_start, 2),
        "signins_per_second": round(len(counted) / (window_end - window_start), 1),
        "latency_ms": {"p50": latency["p50"], "p95": latency["p95"]},
        "errors": len(errors),
        "error_samples": [message for _, message in errors[:3]],
        "cpu_seconds_per_signin": {
            name: round(seconds / signins, 4) for name, seconds in per_instance.items()
        },
        "broker_cpu_ms_per_signin_total": round(sum(per_instance.values()) * 1000 / signins, 1),
        "haproxy_cpu_ms_per_signin": round((lb_after - lb_before) * 1000 / signins, 2),
        "postgresql_cpu_ms_per_signin": (
            round(backend_cpu_seconds(database_before, database_after) * 1000 / signins, 2)
            if database.local
            else None
        ),
        "machine_cpu_busy": round(busy / ticks, 2) if ticks else None,
    }


# Set-up: directory, PKI, database, configuration.


def _agents(pki: Pki) -> list[Agent]:
    agents = []
    for mail, uuid, name in PEOPLE:
        profile = pki.issue_card(uuid=uuid, name=name, algorithm="p256", pin="123456")
        key = serialization.load_pem_private_key(profile.private_key_pem.encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        certificate = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
        agents.append(Agent(mail=mail, uuid=uuid, certificate=certificate, key=key))
    return agents


def _configs(
    folder: Path, *, lb_port: int, database_url: str, directory: Mapping[str, Any], pki: Pki
) -> list[Path]:
    """Two instances' broker.toml: one issuer (HAProxy's URL), one secret key."""
    secret_key = secrets.token_urlsafe(32)
    configs = []
    for name in ("b0", "b1"):
        own = folder / name
        own.mkdir()
        configs.append(
            write_config(
                own,
                port=lb_port,
                database_url=database_url,
                directory=directory,
                extra_sections={
                    "broker": {
                        "issuer": f"http://127.0.0.1:{lb_port}",
                        "secret_key": secret_key,
                        "dev": True,
                        "trusted_proxies": 1,
                    },
                    **card_settings(pki),
                },
            )
        )
    return configs


def main() -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before measuring")
    parser.add_argument("--users", type=int, default=8, help="simulated browsers at once")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--method", choices=("mixed", "password", "card"), default="mixed")
    parser.add_argument("--pg-url", default=os.environ.get("CAREID_TEST_DATABASE_URL"))
    args = parser.parse_args()
    if not args.pg_url:
        parser.error("needs PostgreSQL: --pg-url or CAREID_TEST_DATABASE_URL")
    if haproxy_binary() is None:
        parser.error("needs HAProxy (Debian package haproxy)")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="careid-bench-lb-") as raw:
        folder = Path(raw)
        with (
            start_slapd(folder / "slapd") as slapd,
            development_pki(folder / "pki") as (pki, _),
            throwaway_postgres(args.pg_url) as database_url,
        ):
            agents = _agents(pki)
            upgrade(database_url)
            register_agents(database_url, agents)
            lb_port = free_port()
            configs = _configs(
                folder,
                lb_port=lb_port,
                database_url=database_url,
                directory=slapd.directory_settings(),
                pki=pki,
            )
            ports = [free_port(), free_port()]
            instances: list[Instance] = []
            database = DatabaseBackends(database_url)
            try:
                for count in (1, 2):
                    while len(instances) < count:
                        n = len(instances)
                        instances.append(
                            start_instance(f"b{n}", configs[n], port=ports[n], args=args)
                        )
                    upstreams = [Upstream(name=i.name, port=i.port) for i in instances]
                    with start_haproxy(folder / f"haproxy-{count}", upstreams, port=lb_port) as lb:
                        results.append(measure(lb, instances, agents, database, args))
            finally:
                for instance in instances:
                    instance.stop()
                database.close()

    one, two = results
    ratio = (
        round(two["signins_per_second"] / one["signins_per_second"], 2) if one["signins"] else None
    )
    report = {
        "benchmark": "load_balanced",
        "flow": (
            "authorize, login page, password or card (challenge, agent signs, authenticate),"
            " token, userinfo; through HAProxy (round robin, no stickiness)"
        ),
        "server": (
            f"careid-broker serve per instance: {args.workers} gunicorn workers"
            f" x {args.threads} threads"
        ),
        "database": "PostgreSQL, one database shared by the instances",
        "virtual_users": args.users,
        "method": args.method,
        "seconds_measured_per_run": args.seconds,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "target": {"errors": 0, "two_to_one_ratio_at_least": MIN_RATIO},
        "results": results,
        "ratio_two_to_one": ratio,
        "note": (
            "Everything (benchmark clients, HAProxy, both instances, PostgreSQL, slapd, the"
            " OCSP responder) runs on this machine's cores, so the second instance brings no"
            " new CPU: a ratio near 1 with machine_cpu_busy near 1 means the machine is the"
            " limit, not the shared database or the audit lock. Size from"
            " broker_cpu_ms_per_signin_total: one core serves about 1000 / that many"
            " sign-ins per second."
        ),
    }
    met = bool(ratio is not None and ratio >= MIN_RATIO and not one["errors"] and not two["errors"])
    report["meets_target"] = met
    print(json.dumps(report, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
