"""Complete password sign-ins per second through the OpenID Provider, and their latency.

One sign-in is what a relying party and a browser do end to end, over real HTTP against
`careid-broker serve` (gunicorn, 3 sync workers by default): GET /authorize → GET
/login → POST /login (an LDAP bind as the user against a real slapd, plus the directory
checks; its answer sends the browser on to the RP with the code) → POST /token
(client_secret_basic, PKCE) → GET /userinfo. Each virtual user is a new browser for
every sign-in (its own cookies, no single sign-on), so every iteration pays for the
password check; connections are kept alive as a browser's would be.

Backends: SQLite (a WAL file) and, when a PostgreSQL server is named by --pg-url or
CAREID_TEST_DATABASE_URL, PostgreSQL (a throwaway database, dropped afterwards).

Targets (2 cores, 8 users, LDAP binds included): p95 under 60 ms and no errors, judged
here (`targets_met`; exit status 1 when one is missed); the rate, at least 0.5 of
node-oidc-provider's in the same run, is judged by `bench/peer_compare.py`.

Run: .venv/bin/python bench/oidc_password_flow.py [--signins 200] [--users 8]
Prints JSON. Loopback only; needs slapd (Debian package slapd).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker_bench import (
    RATE_TARGETS,
    RATE_TARGETS_NOTE,
    TARGET_P95_MS,
    Browser,
    Server,
    WorkMeter,
    add_load_arguments,
    add_server_arguments,
    authorize,
    emit,
    finish_signin,
    password_setup,
    path_of,
    run_users,
    running_broker,
    select_backends,
    server_label,
)
from careid_devkit.slapd import start_slapd

PASSWORD = "Demo-Password-1"
# Accounts that may sign in (active, AUP current): spread the load as a ward would.
ACCOUNTS = ("alex.morgan@nhs.net", "lee.admin@nhs.net", "kim.taylor@nhs.net")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def one_signin(port: int, mail: str) -> None:
    """A complete sign-in; raises on anything unexpected."""
    browser = Browser(port)
    try:
        authorization = authorize(browser)
        status, _, page = browser.request("GET", path_of(authorization.login_url))
        match = _CSRF.search(page.decode())
        assert status == 200 and match, f"login page {status}"
        status, headers, _ = browser.request(
            "POST",
            "/login",
            form={
                "csrf_token": match.group(1),
                "tx": authorization.tx,
                "email": mail,
                "password": PASSWORD,
            },
        )
        assert status == 303, f"sign-in {status}"
        claims = finish_signin(browser, authorization, headers["Location"])
        assert claims["email"] == mail, "userinfo email"
    finally:
        browser.close()


def run_load(server: Server, *, signins: int, users: int) -> dict[str, Any]:
    """`signins` sign-ins shared among `users` threads; throughput, latency, work."""
    port = server.port

    def timed_signin(slot: int) -> float:
        started = time.perf_counter()
        one_signin(port, ACCOUNTS[slot % len(ACCOUNTS)])
        return time.perf_counter() - started

    for warm in range(users):  # the first requests of each worker load keys and pools
        one_signin(port, ACCOUNTS[warm % len(ACCOUNTS)])
    meter = WorkMeter(server=server)
    meter.start()
    outcome = run_users(timed_signin, signins=signins, users=users)
    return outcome.report(latency_key="latency_ms", extra=meter.report(len(outcome.latencies)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_arguments(parser)
    add_server_arguments(parser)
    args = parser.parse_args()
    backends = select_backends(parser, args)

    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="careid-bench-") as raw,
        start_slapd(Path(raw) / "slapd") as slapd,
    ):
        setup = password_setup(args, slapd.directory_settings())
        for backend in backends:
            with running_broker(backend, Path(raw), setup) as server:
                outcome = run_load(server, signins=args.signins, users=args.users)
            results.append({"backend": backend, **outcome})
    return emit(
        {
            "benchmark": "oidc_password_flow",
            "flow": "authorize, login page, password POST (LDAP bind, code), token, userinfo",
            "server": server_label(args),
            "virtual_users": args.users,
            "cpu_count": os.cpu_count(),
            "target": {
                "p95_ms_below": TARGET_P95_MS,
                "password_ratio_at_least": RATE_TARGETS["password_ratio_at_least"],
                "rates": RATE_TARGETS_NOTE,
            },
            "results": results,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
