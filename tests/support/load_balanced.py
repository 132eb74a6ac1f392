"""Two `careid-broker serve` instances on one PostgreSQL database behind HAProxy, and a
browser that drives them over real HTTP through the load balancer.

- `running_cluster(...)`: the instances (each with its own port, folder and log) and
  HAProxy round-robin in front; the issuer is HAProxy's URL, `trusted_proxies = 1`.
- `LbBrowser`: one browser (its own cookies) that notes which instance answered each of
  its requests (`X-Served-By`), and the flows a browser, an RP and the agent make:
  password and card sign-in through a relying party, registration, the admin console.
- `kill_instance`: SIGKILL an instance's gunicorn master and every worker at once.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker_support import DEMO_PASSWORD, csrf_token_from, form_of, step_from, write_broker_toml
from card_support import SimulatedAgent
from cryptography.hazmat.primitives import hashes, serialization
from joserfc import jwt
from joserfc.jwk import KeySet
from oidc_process import BrokerProcess, HttpBrowser, HttpResult, free_port
from oidc_support import ALL_SCOPES, REDIRECT, RP_SECRET, basic, pkce_pair, query_of

from careid_broker.store import LinkMode, NewRegistration, Registrations, create_store
from careid_devkit.haproxy import SERVED_BY_HEADER, Haproxy, Upstream, start_haproxy
from careid_devkit.net import port_answers

SECRET_KEY = "load-balanced-test-secret-key-0123456789-abcdef"  # noqa: S105 - test only
# HAProxy connects to the instances from this loopback address, the clients from
# 127.0.0.1: what the broker records shows which one it took for the client.
BALANCER_SOURCE = "127.0.0.3"
_DATA_CSRF = re.compile(r'data-csrf-token="([^"]+)"')


class Instance(BrokerProcess):
    """One broker instance (gunicorn master and workers) that can be killed outright."""

    def __init__(self, name: str, config: Path, *, port: int, workers: int, log: Path) -> None:
        self.name = name
        super().__init__(config, port=port, workers=workers, log=log)

    @property
    def pid(self) -> int:
        """The gunicorn master's process id."""
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces, so split after its ")".
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def kill_instance(instance: Instance) -> list[int]:
    """SIGKILL the master and its workers together (no graceful anything); their pids.

    Returns once the instance's port refuses connections: a multi-threaded worker's
    main thread can show as a zombie while its other threads, and the listening socket
    they share, are still going away.
    """
    pids = [instance.pid, *_children(instance.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    instance._process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while port_answers(instance.port):
        assert time.monotonic() < deadline, f"port {instance.port} still open after SIGKILL"
        time.sleep(0.01)
    return pids


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """How to start one instance (again)."""

    name: str
    config: Path
    port: int
    workers: int

    def start(self, log: Path) -> Instance:
        return Instance(self.name, self.config, port=self.port, workers=self.workers, log=log)


@dataclass
class Cluster:
    """The instances, HAProxy in front, and the database they share."""

    lb: Haproxy
    specs: list[InstanceSpec]
    instances: list[Instance]
    database_url: str
    _starts: int = 0

    @property
    def url(self) -> str:
        return self.lb.url

    def restart(self, name: str) -> Instance:
        """Start instance `name` again (after a kill), on its port, with a new log."""
        index = next(n for n, spec in enumerate(self.specs) if spec.name == name)
        self._starts += 1
        spec = self.specs[index]
        self.instances[index].stop()  # reaps it and closes its log
        self.instances[index] = spec.start(spec.config.with_name(f"log.{self._starts}"))
        wait_until_all_serve(self)
        return self.instances[index]

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()
        self.lb.stop()


def register_directly(database_url: str, agent: SimulatedAgent, mail: str, org_code: str) -> None:
    """Store a registration as a finished registration leaves one."""
    store = create_store(database_url)
    try:
        certificate = agent.certificate
        Registrations(store).create(
            NewRegistration(
                card_uuid=agent.uuid,
                account_mail=mail,
                account_dn=f"uid={mail.split('@')[0]},ou=people,dc=nhs,dc=example",
                org_code=org_code,
                link_mode=LinkMode.UUID,
                cert_issuer_dn=certificate.issuer.rfc4514_string(),
                cert_serial=f"{certificate.serial_number:X}",
                cert_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
                cert_der=certificate.public_bytes(serialization.Encoding.DER),
            )
        )
    finally:
        store.dispose()


@contextmanager
def running_cluster(
    folder: Path,
    *,
    database_url: str,
    directory: Mapping[str, Any],
    pki: Mapping[str, Any],
    clients_file: Path,
    count: int = 2,
    workers: int = 2,
) -> Iterator[Cluster]:
    """`count` instances on `database_url` (migrated already) behind HAProxy."""
    lb_port = free_port()
    issuer = f"http://127.0.0.1:{lb_port}"
    specs: list[InstanceSpec] = []
    for index in range(count):
        own = folder / f"instance{index}"
        own.mkdir()
        config = write_broker_toml(
            own / "broker.toml",
            {
                "broker": {
                    "issuer": issuer,
                    "secret_key": SECRET_KEY,
                    "dev": True,
                    "trusted_proxies": 1,
                },
                "logging": {"format": "text", "level": "WARNING"},
                "database": {"url": database_url, "pool_size": 3},
                "directory": dict(directory),
                "oidc": {"clients_file": str(clients_file), "backchannel_poll_seconds": 0.5},
                "pki": dict(pki),
                "card": {"link_mode": "uuid"},
            },
        )
        specs.append(
            InstanceSpec(name=f"b{index}", config=config, port=free_port(), workers=workers)
        )
    with ExitStack() as stack:
        # Start them side by side: each takes seconds to import and fork its workers.
        with ThreadPoolExecutor(max_workers=count) as pool:
            starting = [pool.submit(spec.start, spec.config.with_name("log")) for spec in specs]
        for future in starting:
            if future.exception() is None:
                stack.callback(future.result().stop)
        instances = [future.result() for future in starting]
        lb = start_haproxy(
            folder / "haproxy",
            [Upstream(name=spec.name, port=spec.port) for spec in specs],
            port=lb_port,
            log_requests=True,
            source=BALANCER_SOURCE,
        )
        stack.pop_all()
        cluster = Cluster(lb=lb, specs=specs, instances=instances, database_url=database_url)
        try:
            wait_until_all_serve(cluster)
            yield cluster
        finally:
            cluster.stop()


def wait_until_all_serve(cluster: Cluster, timeout: float = 20.0) -> None:
    """Until every instance has answered through HAProxy (its health checks passed)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != {spec.name for spec in cluster.specs}:
        assert time.monotonic() < deadline, f"only {seen} answered: {cluster.lb.log_tail()}"
        try:
            answer = LbBrowser(cluster.url).get("/readyz")
        except OSError:
            answer = None
        if answer is not None and answer.status == 200:
            seen.add(answer.headers.get(SERVED_BY_HEADER, ""))
        else:
            time.sleep(0.1)


@dataclass(frozen=True, kw_only=True)
class Served:
    """One request of a browser, and the instance that answered it ("" for HAProxy)."""

    method: str
    path: str
    status: int
    instance: str


@dataclass(frozen=True, kw_only=True)
class Tokens:
    """What the RP got for one sign-in."""

    id_token: str
    access_token: str
    claims: dict[str, Any]


@dataclass
class LbBrowser:
    """A browser behind the load balancer: its cookies, and who answered each request."""

    base: str
    #: Headers sent with every request (e.g. a forged X-Forwarded-For).
    send_headers: dict[str, str] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._http = HttpBrowser()

    def _send(
        self, method: str, path: str, *, form: Mapping[str, str] | None = None,
        body: Any = None, headers: Mapping[str, str] | None = None,
    ) -> HttpResult:  # fmt: skip
        url = path if path.startswith("http") else urllib.parse.urljoin(self.base, path)
        sent = {**self.send_headers, **(headers or {})}
        if body is not None:
            result = self._json(url, body, sent)
        else:
            result = self._http.request(url, form=form, headers=sent)
        # HAProxy sends header names in lower case: give them back their usual spelling.
        result = HttpResult(
            result.status, {k.title(): v for k, v in result.headers.items()}, result.body
        )
        self.served.append(
            Served(
                method=method,
                path=urllib.parse.urlsplit(url).path,
                status=result.status,
                instance=result.headers.get(SERVED_BY_HEADER, ""),
            )
        )
        return result

    def _json(self, url: str, body: Any, headers: dict[str, str]) -> HttpResult:
        headers = {**headers, "Content-Type": "application/json"}
        # HttpBrowser posts forms only; send the JSON through its opener (its cookies).
        request = urllib.request.Request(  # noqa: S310 - loopback
            url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with self._http._opener.open(request, timeout=30) as response:  # noqa: S310
                return HttpResult(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return HttpResult(exc.code, dict(exc.headers), exc.read())

    def get(self, path: str, **kwargs: Any) -> HttpResult:
        return self._send("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> HttpResult:
        return self._send("POST", path, **kwargs)

    def instances(self) -> list[str]:
        """Which instance answered each request, in order."""
        return [s.instance for s in self.served]

    # Pages and their scripts --------------------------------------------------------

    def script_headers(self, page: HttpResult) -> dict[str, str]:
        """What a page's script sends: its CSRF token and the broker's own Origin."""
        match = _DATA_CSRF.search(page.body.decode())
        assert match, f"no data-csrf-token on the page: {page.body[:300]!r}"
        return {
            "Origin": self.base,
            "X-CSRF-Token": html.unescape(match.group(1)),
            "Accept": "application/json",
        }

    def card_round(
        self, page: HttpResult, agent: SimulatedAgent, *, tx: str | None, prefix: str
    ) -> HttpResult:
        """challenge → the agent signs for the issuer's origin → authenticate."""
        headers = self.script_headers(page)
        issued = self.post(f"{prefix}/challenge", body={"tx": tx}, headers=headers)
        assert issued.status == 200, issued.body[:300]
        challenge = issued.json()["challenge"]
        token = agent.sign(challenge, origin=self.base)
        body = {"tx": tx, "challenge": challenge, "token": token}
        step = step_from(page.body.decode())
        if step is not None:  # a registration page names its step
            body["step"] = step
        return self.post(f"{prefix}/authenticate", body=body, headers=headers)

    # Through a relying party ----------------------------------------------------------

    def authorize(self, **extra: str) -> tuple[HttpResult, str]:
        """GET /authorize as the RP sends the browser; (answer, PKCE verifier)."""
        verifier, challenge = pkce_pair()
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": "rp",
                "redirect_uri": REDIRECT,
                "scope": ALL_SCOPES,
                "state": secrets.token_urlsafe(8),
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                **extra,
            }
        )
        answer = self.get(f"/authorize?{query}")
        assert answer.status == 302, answer.body[:300]
        return answer, verifier

    def password_signin(self, mail: str) -> tuple[str, str]:
        """authorize → login page → password, answered with the code; (code, verifier)."""
        authorized, verifier = self.authorize()
        login = authorized.location
        page = self.get(login)
        assert page.status == 200, page.body[:300]
        posted = self.post(
            "/login",
            form={
                "csrf_token": csrf_token_from(page.body.decode()),
                "tx": query_of(login)["tx"],
                "email": mail,
                "password": DEMO_PASSWORD,
            },
        )
        assert posted.status == 303, posted.body[:300]
        return self._code(posted.location), verifier

    def card_signin(self, agent: SimulatedAgent) -> tuple[str, str]:
        """authorize → login page → card challenge, signature, authenticate (answered with
        where the code is); (code, verifier)."""
        authorized, verifier = self.authorize()
        login = authorized.location
        if login.startswith(REDIRECT):  # signed in already (single sign-on)
            return query_of(login)["code"], verifier
        page = self.get(login)
        assert page.status == 200, page.body[:300]
        answer = self.card_round(page, agent, tx=query_of(login)["tx"], prefix="/card")
        assert answer.status == 200, answer.body[:300]
        return self._code(answer.json()["redirect"]), verifier

    @staticmethod
    def _code(answer: str) -> str:
        """The code in a sign-in's answer, which sends the browser on to the RP."""
        assert answer.startswith(REDIRECT), answer
        return query_of(answer)["code"]

    def redeem(self, code: str, verifier: str) -> Tokens:
        """The RP's back end: code → tokens at /token, checked against /jwks."""
        answer = self.post(
            "/token",
            form={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
            headers=basic("rp", RP_SECRET),
        )
        assert answer.status == 200, answer.body[:300]
        body = answer.json()
        return Tokens(
            id_token=body["id_token"],
            access_token=body["access_token"],
            claims=self.verify(body["id_token"]),
        )

    def verify(self, token: str) -> dict[str, Any]:
        """A JWT's claims, its signature checked against the broker's /jwks."""
        published = self.get("/jwks")
        assert published.status == 200, published.body[:300]
        keys = KeySet.import_key_set(published.json())
        return dict(jwt.decode(token, keys, algorithms=["RS256", "ES256"]).claims)

    # Registration and the admin console -----------------------------------------------

    def register(self, agent: SimulatedAgent, mail: str) -> HttpResult:
        """The three steps: password, card and PIN, confirm; the final page."""
        page = self.get("/register")
        assert page.status == 200, page.body[:300]
        first = self.post(
            "/register",
            form={
                "csrf_token": csrf_token_from(page.body.decode()),
                "email": mail,
                "password": DEMO_PASSWORD,
            },
        )
        assert first.status == 303 and first.location.endswith("/register/card"), first.body
        card_page = self.get(first.location)
        assert card_page.status == 200, card_page.body[:300]
        second = self.card_round(card_page, agent, tx=None, prefix="/register")
        assert second.status == 200, second.body[:300]
        confirm = self.get("/register/confirm")
        assert confirm.status == 200, confirm.body[:300]
        return self.post("/register/confirm", form=form_of(confirm.body.decode()))

    def admin_signin(self, agent: SimulatedAgent) -> None:
        """/admin sends a browser without a card session to the card sign-in and back."""
        sent = self.get("/admin")
        assert sent.status in (302, 303) and "/login" in sent.location, sent.body[:300]
        page = self.get(sent.location)
        assert page.status == 200, page.body[:300]
        answer = self.card_round(page, agent, tx=None, prefix="/card")
        assert answer.status == 200, answer.body[:300]
        back = self.get(answer.json()["redirect"])
        if back.status in (302, 303):
            back = self.get(back.location)
        assert back.status == 200 and 'id="admin-orgs"' in back.body.decode(), back.body[:300]

    def admin_remove(self, mail: str, card_uuid: str, reason: str) -> HttpResult:
        """Reason, confirmation, removal; the person's page afterwards."""
        form_page = self.get(f"/admin/users/{mail}/remove")
        assert form_page.status == 200, form_page.body[:300]
        token = csrf_token_from(form_page.body.decode())
        check = self.post(
            f"/admin/users/{mail}/remove", form={"csrf_token": token, "reason": reason}
        )
        confirmation = check.body.decode()
        assert check.status == 200 and 'id="confirm-remove"' in confirmation
        tag = re.search(r'name="registration" value="([0-9a-f]+)"', confirmation)
        assert tag is not None, confirmation[:300]
        done = self.post(
            f"/admin/users/{mail}/remove/confirm",
            form={
                "csrf_token": csrf_token_from(confirmation),
                "card_uuid": card_uuid,
                "registration": tag.group(1),
                "reason": reason,
            },
        )
        assert done.status == 303, done.body[:300]
        return self.get(done.location)


def alternated(instances: list[str]) -> bool:
    """Whether no two consecutive requests were answered by the same instance."""
    return all(a != b for a, b in zip(instances, instances[1:], strict=False))
