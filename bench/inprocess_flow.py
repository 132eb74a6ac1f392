"""The work one sign-in costs the broker, request by request, in-process.

The HTTP benches (`oidc_password_flow.py`, `card_signin.py`, `peer_compare.py`) measure
what a deployment sees, but this machine's speed drifts by up to 2x between runs, which
hides changes of a few per cent. This bench runs the same flows through the broker app
itself, with Flask's test client instead of gunicorn and HTTP:

- `--flow password` (the default), as `oidc_password_flow.py`: GET /authorize → GET
  /login → POST /login with a real LDAP bind against slapd, answered with the RP's code
  → POST /token → GET /userinfo;
- `--flow card`, as `card_signin.py`: GET /authorize (AAL3_ANY) → GET /login → POST
  /card/challenge → (a simulated agent signs with a development PKI card key, not
  counted) → POST /card/authenticate (chain, OCSP answer cached from the devkit's
  responder, signature, registration, directory) → POST /token → GET /userinfo;

and reports per request:

- the broker's CPU milliseconds (this process; slapd's own CPU is not counted);
- database transactions begun (read-only and write) and statements run;
- directory requests (binds and searches), from the broker's own counters;
- Python function calls per sign-in under cProfile: a count, not a time, so two runs
  of the same code agree whatever the machine is doing. Use it to compare changes.

`--pstats FILE` keeps the cProfile data of the profiled rounds (read it with `python -m
pstats FILE` or snakeviz).

Run: .venv/bin/python bench/inprocess_flow.py [--flow password|card] [--signins 200]
    [--backend sqlite|postgresql]
Prints JSON. Loopback only; needs slapd (Debian package slapd).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import event

from broker_bench import (
    CLI,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT,
    authorization_request,
    parse_metrics,
    path_of,
    query_value,
    throwaway_postgres,
    write_config,
)
from card_signin import (
    PEOPLE,
    Agent,
    card_settings,
    development_pki,
    issue_agents,
    register_agents,
)
from careid_broker.app import create_app
from careid_broker.config import load_config
from careid_broker.store.engine import WRITE_OPTION
from careid_broker.web.context import broker_of
from careid_devkit.slapd import DEMO_USER_PASSWORD, start_slapd

ACCOUNTS = tuple(mail for mail, *_ in PEOPLE)
REQUESTS = {
    "password": ("authorize", "login_page", "login_post", "token", "userinfo"),
    "card": ("authorize", "login_page", "card_challenge", "card_authenticate", "token", "userinfo"),
}
ORIGIN = "http://127.0.0.1:5000"  # the issuer `write_config` gives port 5000
FLOW_NAMES = {
    "password": "authorize, login page, password POST (LDAP bind, code), token, userinfo",
    "card": (
        "authorize, login page, card challenge, (agent signs), card authenticate"
        " (chain, OCSP cached, signature, registration, directory, code), token, userinfo"
    ),
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_DATA_CSRF = re.compile(r'data-csrf-token="([^"]+)"')


class Meter:
    """CPU time and database work per request label."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.label = ""

    def watch(self, engine: Any) -> None:
        def begun(conn: Any) -> None:
            kind = "db_writes" if conn.get_execution_options().get(WRITE_OPTION) else "db_reads"
            self.counts[(self.label, kind)] += 1

        def statement(*_args: Any) -> None:
            self.counts[(self.label, "db_statements")] += 1

        event.listen(engine, "begin", begun)
        event.listen(engine, "before_cursor_execute", statement)

    def request(self, client: FlaskClient, label: str, method: str, path: str, **kw: Any) -> Any:
        self.label = label
        started = time.process_time()
        response = client.open(path, method=method, **kw)
        self.counts[(label, "cpu_us")] += round((time.process_time() - started) * 1e6)
        self.counts[(label, "requests")] += 1
        return response


def one_signin(client: FlaskClient, meter: Meter, mail: str) -> None:
    """The password flow; raises on anything unexpected."""
    login, verifier, csrf = _login_page(client, meter, {}, _CSRF)
    form = {
        "csrf_token": csrf,
        "tx": query_value(login, "tx"),
        "email": mail,
        "password": DEMO_USER_PASSWORD,
    }
    posted = meter.request(client, "login_post", "POST", "/login", data=form)
    assert posted.status_code == 303, f"sign-in {posted.status_code}"
    claims = _code_to_claims(client, meter, posted.headers["Location"], verifier)
    assert claims["email"] == mail, "userinfo"


def one_card_signin(client: FlaskClient, meter: Meter, agent: Agent) -> None:
    """The card flow (the agent's signing is not counted); raises on anything unexpected."""
    login, verifier, csrf = _login_page(client, meter, {"acr_values": "AAL3_ANY"}, _DATA_CSRF)
    script = {"Origin": ORIGIN, "X-CSRF-Token": csrf, "Accept": "application/json"}
    tx = query_value(login, "tx")
    issued = meter.request(
        client, "card_challenge", "POST", "/card/challenge", json={"tx": tx}, headers=script
    )
    assert issued.status_code == 200, f"challenge {issued.status_code}"
    challenge = issued.get_json()["challenge"]
    token = agent.sign(ORIGIN, challenge)
    done = meter.request(
        client,
        "card_authenticate",
        "POST",
        "/card/authenticate",
        json={"tx": tx, "challenge": challenge, "token": token},
        headers=script,
    )
    assert done.status_code == 200, f"authenticate {done.status_code} {done.get_data()[:200]!r}"
    claims = _code_to_claims(client, meter, done.get_json()["redirect"], verifier)
    assert claims["nhsid_useruid"] == agent.uuid, "userinfo"


def _login_page(
    client: FlaskClient, meter: Meter, extra: dict[str, str], csrf: re.Pattern[str]
) -> tuple[str, str, str]:
    """The RP's authorization request and the sign-in page it leads to: the page's URL,
    the PKCE verifier and the page's CSRF token (found by `csrf`)."""
    query, verifier = authorization_request(extra)
    started = meter.request(client, "authorize", "GET", f"/authorize?{query}")
    assert started.status_code == 302, f"authorize {started.status_code}"
    login = started.headers["Location"]
    page = meter.request(client, "login_page", "GET", path_of(login))
    match = csrf.search(page.get_data(as_text=True))
    assert page.status_code == 200 and match, f"login page {page.status_code}"
    return login, verifier, match.group(1)


def _code_to_claims(
    client: FlaskClient, meter: Meter, answer: str, verifier: str
) -> dict[str, Any]:
    """The RP's part: the code in `answer` for tokens, then the userinfo claims."""
    assert answer.startswith(REDIRECT), f"sign-in answered {answer[:80]!r}, not the RP"
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    token = meter.request(
        client,
        "token",
        "POST",
        "/token",
        headers={"Authorization": f"Basic {basic}"},
        data={
            "grant_type": "authorization_code",
            "code": query_value(answer, "code"),
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, f"token {token.status_code}"
    bearer = {"Authorization": f"Bearer {token.get_json()['access_token']}"}
    info = meter.request(client, "userinfo", "GET", "/userinfo", headers=bearer)
    assert info.status_code == 200, f"userinfo {info.status_code}"
    claims: dict[str, Any] = info.get_json()
    return claims


@contextmanager
def _database(backend: str, folder: Path, pg_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'broker.db'}"
        return
    if not pg_url:
        raise SystemExit("--backend postgresql needs --pg-url or CAREID_TEST_DATABASE_URL")
    with throwaway_postgres(pg_url) as url:
        yield url


def _directory_requests(app: Any) -> dict[str, float]:
    """The broker's directory requests so far, by operation (from its /metrics)."""
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200, f"/metrics {answer.status_code}"
    prefix = 'careid_directory_requests_total{operation="'
    return {
        sample[len(prefix) :].split('"')[0]: value
        for sample, value in parse_metrics(answer.get_data(as_text=True)).items()
        if sample.startswith(prefix)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", choices=tuple(REQUESTS), default="password")
    parser.add_argument("--signins", type=int, default=200)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("CAREID_TEST_DATABASE_URL"))
    parser.add_argument("--pstats", type=Path, help="keep the profiled rounds' cProfile data")
    args = parser.parse_args()

    with ExitStack() as stack:
        raw = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="careid-bench-inproc-")))
        slapd = stack.enter_context(start_slapd(raw / "slapd"))
        sections: dict[str, Any] = {"signin": {"address_free_failures": 10000}}
        agents: list[Agent] = []
        if args.flow == "card":
            pki, _ = stack.enter_context(development_pki(raw / "pki"))
            agents = issue_agents(pki, len(PEOPLE))
            sections.update(card_settings(pki))
        url = stack.enter_context(_database(args.backend, raw, args.pg_url))
        config = write_config(
            raw,
            port=5000,
            database_url=url,
            directory=slapd.directory_settings(),
            extra_sections=sections,
        )
        subprocess.run(
            [CLI, "--config", str(config), "db", "upgrade"], check=True, capture_output=True
        )
        if agents:
            register_agents(url, agents)
        app = create_app(load_config(config))
        meter = Meter()
        store = broker_of(app).store
        meter.watch(store.engine)
        if store.read_engine is not store.engine:
            meter.watch(store.read_engine)  # PostgreSQL's read-only pool

        def signin(n: int) -> None:
            if agents:
                one_card_signin(app.test_client(), meter, agents[n % len(agents)])
            else:
                one_signin(app.test_client(), meter, ACCOUNTS[n % len(ACCOUNTS)])

        def rounds(count: int) -> None:
            for n in range(count):
                signin(n)

        rounds(10)  # keys loaded, pools and caches (OCSP answers too) warm
        meter.counts.clear()
        before = _directory_requests(app)
        rounds(args.signins)
        after = _directory_requests(app)
        measured = Counter(meter.counts)

        profiled = max(20, args.signins // 4)
        profile = cProfile.Profile()
        profile.enable()
        rounds(profiled)
        profile.disable()
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        if args.pstats is not None:
            profile.dump_stats(str(args.pstats))

    n = args.signins
    per_request = {
        label: {
            "cpu_ms": round(measured[(label, "cpu_us")] / n / 1000, 2),
            "db_reads": round(measured[(label, "db_reads")] / n, 2),
            "db_writes": round(measured[(label, "db_writes")] / n, 2),
            "db_statements": round(measured[(label, "db_statements")] / n, 2),
        }
        for label in REQUESTS[args.flow]
    }
    totals = {
        key: round(sum(row[key] for row in per_request.values()), 2)
        for key in ("cpu_ms", "db_reads", "db_writes", "db_statements")
    }
    directory = {
        operation: round((after.get(operation, 0.0) - before.get(operation, 0.0)) / n, 2)
        for operation in sorted(after)
    }
    print(
        json.dumps(
            {
                "benchmark": "inprocess_flow",
                "flow": FLOW_NAMES[args.flow],
                "how": "the broker app in this process through Flask's test client; no HTTP",
                "backend": args.backend,
                "signins": n,
                "python_calls_per_signin": round(calls / profiled),
                "per_signin": {**totals, "directory_requests": directory},
                "per_request": per_request,
                "note": (
                    "cpu_ms drifts with the machine; python_calls_per_signin and the counts do"
                    " not: compare those between changes"
                ),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
