"""Chaos: mixed password and card sign-ins while slapd, the OCSP responder and PostgreSQL
are stopped and started under them.

The real parts: a slapd of this test's own, the devkit's OCSP/CRL server on a fixed
port, and a throwaway PostgreSQL cluster (Debian's binaries) that a background thread
stops and starts; the broker runs with its background workers on, a relying party on
127.0.0.1 receives the back-channel logouts. Afterwards: no 5xx but the documented 503s,
every completed sign-in is in the database and the audit, the audit chain verifies, and
every logout has been delivered.

`CAREID_CHAOS_SECONDS` (default 45) sets how long the load runs.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import AppFactory, broker_of, csrf_token_from
from card_support import ISSUER, PIN, SimulatedAgent, register_card
from flask.testing import FlaskClient
from oidc_support import RP_SECRET, Browser, TestRelyingParty, query_of, write_test_clients
from sqlalchemy import func, select

from careid_broker.store import upgrade
from careid_broker.store.models import AuditEntry, LogoutDelivery, SigninSession
from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pki import init_pki
from careid_devkit.slapd import Slapd
from support.clock import FakeClock

pytestmark = [pytest.mark.slapd, pytest.mark.postgres]

CHAOS_SECONDS = float(os.environ.get("CAREID_CHAOS_SECONDS", "45"))
# The 503s a person may see while a part is down (each with a message and Retry-After).
DOCUMENTED_503 = {"store_unavailable", "directory_unavailable", "revocation_unavailable"}
ALEX = "alex.morgan@nhs.net"
ALEX_UUID = "555000000001"
PASSWORD = "Demo-Password-1"  # noqa: S105 - the demo seed's, public


class RealClock(FakeClock):
    """The real time: leases, back-offs and expiries must run out as they would."""

    @property  # type: ignore[override]
    def now(self) -> datetime:
        return datetime.now(UTC)

    @now.setter
    def now(self, value: datetime) -> None:
        raise AssertionError("the chaos test runs on the real clock")


@pytest.fixture
def clock() -> FakeClock:
    """The app's clock (overrides the settable one of broker_fixtures)."""
    return RealClock()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnPostgres:
    """A PostgreSQL cluster of this test's own (initdb), which it may stop and start."""

    def __init__(self, root: Path) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            pytest.skip("needs Debian's postgresql (initdb)")
        self.bin = found[-1].parent
        self.data = root / "data"
        self.port = _free_port()
        self.data.mkdir()
        shutil.chown(self.data, "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        self._as_postgres(
            "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "careid"
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/careid"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1"
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root (runuser) to run a PostgreSQL cluster of its own")
    # Not under pytest's tmp folder: the postgres user cannot reach into root's.
    root = Path(tempfile.mkdtemp(prefix="careid-chaos-pg-"))
    root.chmod(0o755)
    cluster = OwnPostgres(root)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


class OcspSwitch:
    """The devkit's OCSP/CRL server on one port, which can be stopped and started."""

    def __init__(self, pki_dir: Path, port: int) -> None:
        self._dir, self.port = pki_dir, port
        self._server: PkiServer | None = None

    def start(self) -> None:
        self._server = start_pki_server(self._dir, "127.0.0.1", self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


def _chaos(parts: dict[str, tuple[Callable[[], None], Callable[[], None]]], stop: threading.Event,
           log: list[str]) -> None:  # fmt: skip
    """Stop and start one part after another until told to stop; all are up at the end."""
    rng = random.Random(20261206)  # noqa: S311 - a test's schedule, not a secret
    while not stop.wait(rng.uniform(1.0, 2.5)):
        name = rng.choice(sorted(parts))
        down, up = parts[name]
        log.append(f"{name} down")
        down()
        stop.wait(rng.uniform(0.5, 2.0))
        up()
        log.append(f"{name} up")


class Flows:
    """Sign-ins as a browser and an RP make them, tolerating the refusals of an outage."""

    def __init__(self, client_factory: Callable[[], FlaskClient], agent: SimulatedAgent) -> None:
        self._new_client = client_factory
        self._agent = agent
        self.statuses: Counter[tuple[int, str]] = Counter()
        self.completed: Counter[str] = Counter()
        self.signed_out = 0

    def _seen(self, response: Any) -> Any:
        code = ""
        if response.status_code >= 500:
            text = response.get_data(as_text=True)
            body = response.get_json(silent=True)
            if isinstance(body, dict):
                # The token endpoint answers in OAuth's terms (`temporarily_unavailable`)
                # and names the broker's own code beside it.
                code = str(body.get("careid_error") or body.get("error", ""))
            else:
                found = re.search(r'data-error-code="([a-z0-9_]+)"', text)
                code = found.group(1) if found else text[:120]
        self.statuses[(response.status_code, code)] += 1
        return response

    def run(self, method: str) -> None:
        client = self._new_client()
        rp = Browser(client)
        authorization = rp.authorize()
        self._seen(authorization.response)
        location = authorization.response.headers.get("Location", "")
        if not location.startswith("/login?"):
            return
        tx = query_of(location)["tx"]
        page = self._seen(client.get(location))
        if page.status_code != 200:
            return
        csrf = csrf_token_from(page.get_data(as_text=True))
        if method == "password":
            posted = self._seen(
                client.post(
                    "/login",
                    data={
                        "csrf_token": csrf,
                        "tx": tx,
                        "email": ALEX,
                        "password": "Demo-Password-1",
                    },
                )
            )
            if posted.status_code != 303:
                return
            answer_to = posted.headers["Location"]
        else:
            headers = {
                "Origin": ISSUER,
                "Sec-Fetch-Site": "same-origin",
                "X-CSRF-Token": csrf,
                "Accept": "application/json",
            }
            issued = self._seen(client.post("/card/challenge", json={"tx": tx}, headers=headers))
            if issued.status_code != 200:
                return
            challenge = issued.get_json()["challenge"]
            token = self._agent.sign(challenge)
            answer = self._seen(
                client.post(
                    "/card/authenticate",
                    json={"tx": tx, "challenge": challenge, "token": token},
                    headers=headers,
                )
            )
            if answer.status_code != 200:
                return
            answer_to = answer.get_json()["redirect"]
        # A sign-in's answer goes on to the RP with the code: the session and the code
        # were written together, or neither was.
        if not answer_to.startswith(f"{rp.redirect_uri}?code="):
            return
        self.completed[method] += 1
        authorization.redirect = answer_to
        self._seen(rp.redeem(authorization, secret=RP_SECRET))
        signout = self._seen(client.get("/signout"))
        if signout.status_code == 200 and "csrf_token" in signout.get_data(as_text=True):
            token_field = csrf_token_from(signout.get_data(as_text=True))
            done = self._seen(client.post("/signout", data={"csrf_token": token_field}))
            if done.status_code == 200:
                self.signed_out += 1


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # replaced: its own cluster
def test_sign_ins_survive_slapd_ocsp_and_postgresql_going_down_and_up(
    app_factory: AppFactory,
    own_slapd: Slapd,
    own_postgres: OwnPostgres,
    test_rp: TestRelyingParty,
    tmp_path: Path,
) -> None:
    # A PKI whose certificates name the fixed port the OCSP switch serves on.
    now = datetime.now(UTC) - timedelta(days=1)
    ocsp = OcspSwitch(tmp_path / "pki", _free_port())
    pki = init_pki(ocsp._dir, base_url=f"http://127.0.0.1:{ocsp.port}", now=now)
    ocsp.start()
    agent = SimulatedAgent(
        pki.issue_card(uuid=ALEX_UUID, name="Alex Morgan", pin=PIN, algorithm="p256")
    )
    upgrade(own_postgres.url)
    clients = write_test_clients(tmp_path / "clients.toml", backchannel_uri=test_rp.url)
    app = app_factory(
        directory_slapd=own_slapd,
        broker={"dev_disable_workers": False},
        database={"url": own_postgres.url, "pool_size": 2},
        oidc={"clients_file": str(clients), "backchannel_poll_seconds": 0.5},
        pki={
            "trust_anchors": [str(pki.paths.root_certificate)],
            "intermediates": [str(pki.paths.issuing_certificate)],
            "revocation": "ocsp-then-crl",
            "ocsp": {"timeout_seconds": 1, "failure_backoff_seconds": 2},
            "crl": {"timeout_seconds": 1},
        },
    )
    broker = broker_of(app)
    register_card(app, agent, ALEX)
    flows = Flows(app.test_client, agent)
    stop, log = threading.Event(), []
    chaos = threading.Thread(
        target=_chaos,
        args=(
            {
                "slapd": (own_slapd.stop, own_slapd.start),
                "ocsp": (ocsp.stop, ocsp.start),
                "postgresql": (own_postgres.stop, own_postgres.start),
            },
            stop,
            log,
        ),
        daemon=True,
    )
    chaos.start()
    try:
        deadline = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < deadline:
            flows.run(random.choice(("password", "card")))  # noqa: S311
    finally:
        stop.set()
        chaos.join(timeout=30)
    try:
        assert not chaos.is_alive()
        assert len(log) >= 4, log  # the parts did go down and up
        # Every 5xx was a documented 503, naming what was down.
        unexpected = {k: n for k, n in flows.statuses.items() if k[0] >= 500}
        assert all(status == 503 and code in DOCUMENTED_503 for status, code in unexpected), (
            unexpected
        )
        assert flows.completed["password"] and flows.completed["card"], flows.statuses
        assert flows.signed_out  # so logouts were queued for the relying party
        # Every completed sign-in is a session in the database and a success in the audit.
        with broker.store.session() as session:
            sessions = session.scalar(select(func.count()).select_from(SigninSession))
        assert sessions == sum(flows.completed.values())
        with broker.store.session() as session:
            successes = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.event.in_(("signin.password", "signin.card")),
                    AuditEntry.outcome == "success",
                )
            )
        assert successes == sum(flows.completed.values())
        assert broker.repos.audit.verify_chain().ok
        # Every logout queued meanwhile is delivered once the parts are back.
        deadline = time.monotonic() + 90
        while broker.repos.outbox.pending_count() and time.monotonic() < deadline:
            time.sleep(0.5)
        with broker.store.session() as session:
            stuck = [
                (
                    row.client_id,
                    row.attempts,
                    row.last_error,
                    row.next_attempt_at,
                    row.claimed_until,
                )
                for row in session.scalars(
                    select(LogoutDelivery).where(
                        LogoutDelivery.delivered_at.is_(None),
                        LogoutDelivery.abandoned_at.is_(None),
                    )
                )
            ]
        assert stuck == [], (stuck, broker.clock(), test_rp.attempts, test_rp.replays)
    finally:
        broker.oidc.stop_worker()
        ocsp.stop()
