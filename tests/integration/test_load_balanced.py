"""Scale-out: two `careid-broker serve` instances on one PostgreSQL database behind
Debian's HAProxy, round robin with no stickiness.

Every response names the instance that answered (`X-Served-By`, set by HAProxy), so
each scenario shows that one browser's consecutive requests landed on different
instances: a code issued by one is redeemed at the other, a card challenge issued by
one is answered at the other, registration's three steps and the admin console's
removal cross between them, and the back-channel logout a removal queues is delivered
by whichever instance's worker claims it.

Then one instance's gunicorn master and workers are SIGKILLed in the middle of a mixed
password and card load: every sign-in the relying party got tokens for is in the
database, the only failures are HAProxy's 5xx (or a dropped connection) for sign-ins
that were under way at the kill, and every sign-in begun after it succeeds through the
surviving instance. The audit chain still verifies, and the instance, started again,
takes its turn again.

Real parts: slapd (the shared demo directory), PostgreSQL (a database of the module's
own), HAProxy, the devkit's OCSP responder; the card is the software agent
(`SimulatedAgent`), signing for the load balancer's origin.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from broker_fixtures import fresh_pg_database
from card_support import SimulatedAgent
from oidc_support import TestRelyingParty, write_test_clients
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL

from careid_broker.oidc.claims import public_sid
from careid_broker.store import AuditLog, create_store, upgrade
from careid_broker.store.models import (
    AuditEntry,
    AuthorizationCode,
    OAuthToken,
    Registration,
    SigninSession,
)
from careid_devkit.haproxy import RateLimit, haproxy_binary, start_haproxy
from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pki import init_pki
from careid_devkit.slapd import Slapd
from support.load_balanced import (
    BALANCER_SOURCE,
    Cluster,
    LbBrowser,
    Tokens,
    alternated,
    kill_instance,
    register_directly,
    running_cluster,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slapd]

ALEX = ("alex.morgan@nhs.net", "555000000001", "Alex Morgan")  # registers in the test
LEE = ("lee.admin@nhs.net", "555000000004", "Lee Admin")  # local administrator of RX1
KIM = ("kim.taylor@nhs.net", "555000000005", "Kim Taylor")
PIN = "123456"
BOTH = {"b0", "b1"}
# How long the mixed load runs before and after one instance is killed.
BEFORE_KILL_SECONDS = 3.0
AFTER_KILL_SECONDS = 5.0
USERS = 4


@pytest.fixture(scope="module")
def haproxy() -> None:
    if haproxy_binary() is None:
        pytest.skip("needs HAProxy (Debian package haproxy)")


@dataclass
class Cards:
    """The test PKI (served by the devkit's OCSP responder) and one card per person."""

    server: PkiServer
    pki_settings: dict[str, Any]
    agents: dict[str, SimulatedAgent] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cards]:
    work = tmp_path_factory.mktemp("lb-pki") / "pki"
    now = datetime.now(UTC) - timedelta(days=1)
    # The certificates carry the responder's URL: start it on a first PKI, then remake it.
    init_pki(work, now=now)
    with start_pki_server(work, "127.0.0.1", 0) as server:
        pki = init_pki(work, base_url=server.url, now=now, force=True)
        found = Cards(
            server=server,
            pki_settings={
                "trust_anchors": [str(pki.paths.root_certificate)],
                "intermediates": [str(pki.paths.issuing_certificate)],
                "revocation": "ocsp",
            },
        )
        for mail, uuid, name in (ALEX, LEE, KIM):
            profile = pki.issue_card(uuid=uuid, name=name, pin=PIN, algorithm="p256")
            found.agents[mail] = SimulatedAgent(profile)
        yield found


@pytest.fixture(scope="module")
def relying_party() -> Iterator[TestRelyingParty]:
    with TestRelyingParty().running() as rp:
        yield rp


@pytest.fixture(scope="module")
def cluster(
    haproxy: None,
    tmp_path_factory: pytest.TempPathFactory,
    pg_server: URL,
    demo_slapd: Slapd,
    cards: Cards,
    relying_party: TestRelyingParty,
) -> Iterator[Cluster]:
    """Both instances and HAProxy on a database of the module's own; Lee (an
    administrator) and Kim are registered already, Alex registers in a test."""
    folder = tmp_path_factory.mktemp("lb")
    with fresh_pg_database(pg_server, "careid_lb") as url:
        database_url = url.render_as_string(hide_password=False)
        upgrade(database_url)
        for mail, org in ((LEE[0], "RX1"), (KIM[0], "Y00001")):
            register_directly(database_url, cards.agents[mail], mail, org)
        clients = write_test_clients(folder / "clients.toml", backchannel_uri=relying_party.url)
        with running_cluster(
            folder,
            database_url=database_url,
            directory=demo_slapd.directory_settings(),
            pki=cards.pki_settings,
            clients_file=clients,
        ) as running:
            yield running


def _count(database_url: str, statement: Any) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(statement) or 0)
    finally:
        engine.dispose()


# Each flow through the load balancer.


def test_a_password_signin_crosses_instances_and_its_code_is_redeemed_at_the_other(
    cluster: Cluster,
) -> None:
    # A client that forges X-Forwarded-For: HAProxy appends the address it saw.
    browser = LbBrowser(cluster.url, send_headers={"X-Forwarded-For": "203.0.113.7"})
    code, verifier = browser.password_signin(ALEX[0])
    # authorize, login page, password (with the code): each answered by the other instance.
    assert alternated(browser.instances()) and set(browser.instances()) == BOTH
    issued_by = browser.served[-1].instance

    rp = LbBrowser(cluster.url)
    tokens = rp.redeem(code, verifier)
    assert rp.served[0].path == "/token" and rp.served[0].instance != issued_by
    claims = tokens.claims
    assert claims["iss"] == cluster.url and claims["aud"] == "rp"
    assert claims["email"] == ALEX[0] and claims["acr"] == "AAL1_USERPASS"

    info = rp.get("/userinfo", headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert info.status == 200 and info.json()["sub"] == claims["sub"]
    assert set(rp.instances()) == BOTH
    # The broker trusted exactly one hop: the client's address as HAProxy saw it, not
    # the balancer's own (BALANCER_SOURCE) nor the forged one.
    audited = _count(
        cluster.database_url,
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.event == "signin.password",
            AuditEntry.outcome == "success",
            AuditEntry.client_address == "127.0.0.1",
        ),
    )
    forged_or_balancer = _count(
        cluster.database_url,
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.client_address.in_(("203.0.113.7", BALANCER_SOURCE))),
    )
    assert audited >= 1 and forged_or_balancer == 0


def test_a_card_signin_crosses_instances(cluster: Cluster, cards: Cards) -> None:
    browser = LbBrowser(cluster.url)
    code, verifier = browser.card_signin(cards.agents[KIM[0]])
    assert alternated(browser.instances()) and set(browser.instances()) == BOTH
    by_path = {s.path: s.instance for s in browser.served}
    # The challenge one instance issued was answered at the other.
    assert by_path["/card/challenge"] != by_path["/card/authenticate"]

    tokens = LbBrowser(cluster.url).redeem(code, verifier)
    assert tokens.claims["acr"] == "AAL3_SMARTCARD"
    assert tokens.claims["nhsid_useruid"] == KIM[1]


def test_registration_then_admin_removal_with_back_channel_logout(
    cluster: Cluster, cards: Cards, relying_party: TestRelyingParty
) -> None:
    alex_card = cards.agents[ALEX[0]]
    alex = LbBrowser(cluster.url)
    done = alex.register(alex_card, ALEX[0])
    assert done.status == 200, done.body[:300]
    # Step 1 (password), step 2 (card) and step 3 (confirm) crossed between instances.
    assert alternated(alex.instances()) and set(alex.instances()) == BOTH
    assert (
        _count(
            cluster.database_url,
            select(func.count())
            .select_from(Registration)
            .where(Registration.card_uuid == ALEX[1], Registration.account_mail == ALEX[0]),
        )
        == 1
    )

    # Alex, signed in by the registration, signs in to the relying party (single sign-on).
    code, verifier = alex.card_signin(alex_card)
    rp = LbBrowser(cluster.url)
    tokens: Tokens = rp.redeem(code, verifier)
    assert tokens.claims["acr"] == "AAL3_SMARTCARD"

    lee = LbBrowser(cluster.url)
    lee.admin_signin(cards.agents[LEE[0]])
    page = lee.admin_remove(ALEX[0], ALEX[1], "lost_card").body.decode()
    assert "registration was removed" in page and 'id="admin-no-registration"' in page
    assert alternated(lee.instances()) and set(lee.instances()) == BOTH

    # The relying party is told, by whichever instance's worker delivered it (every
    # session of Alex's ends: the password one of the first test as well).
    deadline = time.monotonic() + 20
    logouts: dict[str, dict[str, Any]] = {}
    while tokens.claims["sid"] not in logouts:
        assert time.monotonic() < deadline, f"no logout for the session: {logouts}"
        for received in relying_party.wait_for(len(logouts) + 1, timeout=20):
            claims = rp.verify(received.form["logout_token"])
            logouts[claims["sid"]] = claims
    logout = logouts[tokens.claims["sid"]]
    assert logout["sub"] == tokens.claims["sub"]
    assert "http://schemas.openid.net/event/backchannel-logout" in logout["events"]
    # Its tokens are revoked, and Alex's browser is signed out on both instances.
    revoked = rp.get("/userinfo", headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert revoked.status == 401
    for _ in range(2):
        again, _ = alex.authorize()
        assert again.location.startswith("/login?"), again.location


# One instance killed under load.


@dataclass
class Attempt:
    """One sign-in of the load: when it began, how it ended, who answered."""

    method: str
    started: float
    tokens: Tokens | None = None
    failure: str | None = None  # "lb_5xx", "connection", or what went wrong otherwise
    served: list[str] = field(default_factory=list)


def _one_signin(cluster: Cluster, method: str, card: SimulatedAgent) -> Attempt:
    attempt = Attempt(method=method, started=time.monotonic())
    browser = LbBrowser(cluster.url)
    try:
        if method == "password":
            code, verifier = browser.password_signin(ALEX[0])
        else:
            code, verifier = browser.card_signin(card)
        attempt.tokens = browser.redeem(code, verifier)
    except (OSError, http.client.HTTPException, urllib.error.URLError) as exc:
        attempt.failure = f"connection: {type(exc).__name__}"
    except AssertionError as exc:
        last = browser.served[-1] if browser.served else None
        # HAProxy's own answer (no instance named) for a request the dead instance held.
        if last is not None and last.status in (502, 503, 504) and not last.instance:
            attempt.failure = f"lb_5xx: {last.status} {last.method} {last.path}"
        else:
            attempt.failure = f"wrong answer: {last} {exc}"[:400]
    except Exception as exc:  # anything else is a wrong answer too: reported, never lost
        attempt.failure = f"wrong answer: {type(exc).__name__}: {exc}"[:400]
    attempt.served = browser.instances()
    return attempt


def _signin_successes(database_url: str) -> int:
    return _count(
        database_url,
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.event.in_(("signin.password", "signin.card")),
            AuditEntry.outcome == "success",
        ),
    )


def _run_load_and_kill(cluster: Cluster, card: SimulatedAgent) -> tuple[list[Attempt], float]:
    """Mixed sign-ins from USERS browsers at once; the first instance killed midway."""
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()

    def user(index: int) -> None:
        n = index
        while not stop.is_set():
            done = _one_signin(cluster, ("password", "card")[n % 2], card)
            n += 1
            with lock:
                attempts.append(done)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(USERS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(BEFORE_KILL_SECONDS)
        killed = kill_instance(cluster.instances[0])
        killed_at = time.monotonic()
        time.sleep(AFTER_KILL_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(killed) == 3  # the master and its two workers
    return attempts, killed_at


def test_killing_one_instance_under_load_loses_no_completed_signin(
    cluster: Cluster, cards: Cards
) -> None:
    victim, survivor = (spec.name for spec in cluster.specs)
    url = cluster.database_url
    audited_before = _signin_successes(url)
    try:
        attempts, killed_at = _run_load_and_kill(cluster, cards.agents[KIM[0]])
        victim_was_dead = not cluster.instances[0].alive()
    finally:
        cluster.restart(victim)  # whatever happened, the next test finds both serving
    assert victim_was_dead

    before = [a for a in attempts if a.started < killed_at]
    after = [a for a in attempts if a.started >= killed_at]
    completed = [a for a in attempts if a.tokens is not None]
    failed = [a for a in attempts if a.failure is not None]
    summary = {
        "before": len(before),
        "after": len(after),
        "failures": [(round(a.started - killed_at, 3), a.failure) for a in failed],
    }
    # Both instances carried the load before the kill.
    assert {i for a in before for i in a.served} >= BOTH, summary
    # A failure is only a request the dead instance held when it died: HAProxy's 5xx or
    # a dropped connection, never a wrong answer, and only for a sign-in under way.
    assert all(a.failure and a.failure.startswith(("lb_5xx", "connection")) for a in failed), (
        summary
    )
    assert all(a.started < killed_at for a in failed), summary
    # Every sign-in begun after the kill succeeded, through the survivor alone.
    assert len(after) >= 3 and all(a.tokens is not None for a in after), summary
    assert {i for a in after for i in a.served} == {survivor}, summary
    assert {a.method for a in after} == {"password", "card"}, summary

    # Every sign-in the relying party got tokens for is in the database: its session,
    # its code (used) and its access token; and a success in the audit.
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = {public_sid(sid): sid for sid in conn.scalars(select(SigninSession.sid))}
    finally:
        engine.dispose()
    seen = [a.tokens.claims["sid"] for a in completed if a.tokens is not None]
    assert [sid for sid in seen if sid not in stored] == []
    sids = [stored[sid] for sid in seen]
    used_codes = select(func.count(func.distinct(AuthorizationCode.sid))).where(
        AuthorizationCode.sid.in_(sids), AuthorizationCode.consumed_at.is_not(None)
    )
    assert _count(url, used_codes) == len(sids)
    access_tokens = select(func.count(func.distinct(OAuthToken.sid))).where(
        OAuthToken.sid.in_(sids), OAuthToken.kind == "access"
    )
    assert _count(url, access_tokens) == len(sids)
    assert _signin_successes(url) - audited_before >= len(completed)
    # The audit chain survived a writer killed mid-append.
    store = create_store(url)
    try:
        assert AuditLog(store).verify_chain().ok
    finally:
        store.dispose()

    # The restarted instance takes its turn again.
    browser = LbBrowser(cluster.url)
    browser.redeem(*browser.password_signin(ALEX[0]))
    assert set(browser.instances()) == BOTH


# Request flooding, refused at the load balancer.


def _status(url: str, path: str, method: str = "GET") -> int:
    parts = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=10)
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_flood_from_one_address_is_refused_at_the_balancer_and_nothing_else_is(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The rate limit of docs/reverse-proxy-tls.md, low enough to reach in a test: a
    # second HAProxy in front of the same instances.
    limited = start_haproxy(
        tmp_path_factory.mktemp("limited"),
        cluster.lb.upstreams,
        rate_limit=RateLimit(requests=20, window_seconds=2),
    )
    try:
        authorize = "/authorize?response_type=code&client_id=rp&scope=openid"
        statuses = [_status(limited.url, authorize) for _ in range(30)]
        # Answered by the broker (an error page: no redirect URI) until the limit, then
        # refused by HAProxy itself before reaching an instance.
        assert all(s != 429 for s in statuses[:20]), statuses
        assert statuses[20:] == [429] * 10, statuses
        # One budget for the flood paths, the administration API's included.
        # Percent-encoded, a path is still the one the broker routes it to.
        for path in (
            "/token",
            "/revoke",
            "/userinfo",
            "/api/v1/token",
            "/api/v1/registrations",
            "/%74oken",
            "/api/%761/registrations",
            "/login/card",
        ):
            assert _status(limited.url, path) == 429, path
        # Every POST (a form without its CSRF token is an audited refusal).
        assert _status(limited.url, "/login", method="POST") == 429
        # Paths that are not counted are not refused.
        assert _status(limited.url, "/healthz") == 200
        assert _status(limited.url, "/.well-known/openid-configuration") == 200
        assert _status(limited.url, "/login") == 200
        # HAProxy's rate is the current period's count plus a share of the last one's:
        # two whole periods later the address may ask again.
        time.sleep(4.5)
        assert _status(limited.url, authorize) != 429
    finally:
        limited.stop()
