"""Complete card sign-ins per second through the broker, their server-side latency, and
the in-process cost of the crypto no implementation can avoid.

One sign-in is what a relying party, a browser and the workstation agent do end to end,
over real HTTP against `careid-broker serve` (gunicorn, 3 sync workers): GET /authorize →
GET /login?tx (the page binds tx to the browser) → POST /card/challenge → the simulated
agent signs (a software key and certificate from the development PKI, signing exactly
as careid-agent does; no PC/SC in the loop) → POST /card/authenticate (chain, OCSP,
signature, registration, two directory reads, and the code for the RP) → POST /token
→ GET /userinfo. Every virtual user is a new browser each time (no single sign-on).

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

Targets (2 cores, 8 users, the bench's own clients on the same cores): p95 server-side
latency under 60 ms, under 5 ms of broker CPU per sign-in and no errors, judged here
(`targets_met`; exit status 1 when one is missed); the rate, at least 0.4 of
node-oidc-provider's password flows in the same run, is judged by
`bench/peer_compare.py --card`.

Each person signs in with their one card (`--cards` more than the three people gives
them several: a sign-in with another card than the person's last is then a renewed
card, whose certificate is written to the registration and audited — the rare case,
not the everyday one).

Run: .venv/bin/python bench/card_signin.py [--signins 200] [--users 8] [--cards 3]
Prints JSON. Loopback only; needs slapd (Debian package slapd).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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

from broker_bench import (
    CLIENT_ID,
    RATE_TARGETS,
    RATE_TARGETS_NOTE,
    TARGET_CARD_CPU_MS,
    TARGET_P95_MS,
    BrokerSetup,
    Browser,
    Server,
    WorkMeter,
    add_load_arguments,
    add_server_arguments,
    authorize,
    emit,
    finish_signin,
    path_of,
    run_users,
    running_broker,
    select_backends,
    server_label,
)
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

# People who may sign in by card (active, AUP current, Care Identity active).
PEOPLE = (
    ("alex.morgan@nhs.net", "555000000001", "Alex Morgan", "alex.morgan"),
    ("lee.admin@nhs.net", "555000000004", "Lee Admin", "lee.admin"),
    ("kim.taylor@nhs.net", "555000000005", "Kim Taylor", "kim.taylor"),
)
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


def register_agents(database_url: str, agents: list[Agent]) -> None:
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
                    cert_der=agent.certificate.public_bytes(serialization.Encoding.DER),
                )
            )
    finally:
        store.dispose()


def one_signin(port: int, agent: Agent) -> float:
    """A complete card sign-in; the seconds spent waiting on the broker."""
    browser = Browser(port)
    try:
        authorization = authorize(browser, extra={"acr_values": "AAL3_ANY"})
        status, _, page = browser.request("GET", path_of(authorization.login_url))
        match = _DATA_CSRF.search(page.decode())
        assert status == 200 and match, f"login page {status}"
        script = {
            "Origin": browser.origin,
            "X-CSRF-Token": match.group(1),
            "Accept": "application/json",
        }
        tx = authorization.tx
        status, _, body = browser.request(
            "POST", "/card/challenge", body_json={"tx": tx}, headers=script
        )
        assert status == 200, f"challenge {status} {body[:200]!r}"
        challenge = json.loads(body)["challenge"]
        token = agent.sign(browser.origin, challenge)  # the workstation's part: not counted
        status, _, body = browser.request(
            "POST",
            "/card/authenticate",
            body_json={"tx": tx, "challenge": challenge, "token": token},
            headers=script,
        )
        assert status == 200, f"authenticate {status} {body[:200]!r}"
        claims = finish_signin(browser, authorization, json.loads(body)["redirect"])
        assert claims["nhsid_useruid"] == agent.uuid, "userinfo"
        return browser.waited
    finally:
        browser.close()


def run_load(
    server: Server, agents: list[Agent], *, signins: int, users: int, ocsp: PkiServer
) -> dict[str, Any]:
    """`signins` sign-ins shared among `users` threads; throughput, latency, work."""
    port = server.port
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
    meter = WorkMeter(server=server)
    meter.start()
    outcome = run_users(
        lambda slot: one_signin(port, agents[slot % len(agents)]), signins=signins, users=users
    )
    return outcome.report(
        latency_key="server_side_latency_ms",
        extra={
            "ocsp_requests_during_run": ocsp.ocsp_requests_served - ocsp_before,
            **meter.report(len(outcome.latencies)),
        },
        cpu_target_ms=TARGET_CARD_CPU_MS,
    )


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
def development_pki(folder: Path) -> Iterator[tuple[Pki, PkiServer]]:
    """A development PKI in `folder` whose certificates name its running OCSP responder."""
    # The responder's URL goes into the certificates, and the responder serves from the
    # PKI folder: start it on a first PKI, then issue for real.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    init_pki(folder, now=yesterday)
    with start_pki_server(folder, "127.0.0.1", 0) as ocsp:
        yield init_pki(folder, base_url=ocsp.url, now=yesterday, force=True), ocsp


def card_settings(pki: Pki) -> dict[str, Any]:
    """The broker's `[card]` and `[pki]` settings for cards of `pki`, checked by OCSP."""
    return {
        "card": {"link_mode": "uuid"},
        "pki": {
            "trust_anchors": [str(pki.paths.root_certificate)],
            "intermediates": [str(pki.paths.issuing_certificate)],
            "revocation": "ocsp",
        },
    }


def issue_agents(pki: Pki, count: int) -> list[Agent]:
    """`count` cards spread over the people (more than one per UUID: renewed cards)."""
    agents = []
    for n in range(count):
        mail, uuid, name, _ = PEOPLE[n % len(PEOPLE)]
        profile = pki.issue_card(uuid=uuid, name=name, algorithm="p256", pin="123456")
        agents.append(_agent(profile, mail))
    return agents


def main() -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    add_load_arguments(parser)
    parser.add_argument(
        "--cards", type=int, default=len(PEOPLE), help="simulated agents (cards), one per person"
    )
    add_server_arguments(parser)
    args = parser.parse_args()
    backends = select_backends(parser, args)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="careid-bench-card-") as raw:
        folder = Path(raw)
        with start_slapd(folder / "slapd") as slapd:
            with development_pki(folder / "pki") as (pki, ocsp):
                agents = issue_agents(pki, args.cards)
                floor = crypto_floor(pki, agents[0])
                setup = BrokerSetup(
                    workers=args.workers,
                    threads=args.threads,
                    pg_url=args.pg_url,
                    directory=slapd.directory_settings(),
                    extra_sections=card_settings(pki),
                    prepare=lambda url: register_agents(url, agents),
                )
                for backend in backends:
                    with running_broker(backend, folder, setup) as server:
                        outcome = run_load(
                            server, agents, signins=args.signins, users=args.users, ocsp=ocsp
                        )
                    results.append({"backend": backend, **outcome})
    return emit(
        {
            "benchmark": "card_signin",
            "flow": (
                "authorize, login page, card challenge, (agent signs), card authenticate"
                " (chain, OCSP cached, signature, registration, directory, code),"
                " token, userinfo"
            ),
            "server": server_label(args),
            "virtual_users": args.users,
            "simulated_agents": args.cards,
            "cpu_count": os.cpu_count(),
            "target": {
                "p95_server_side_ms_below": TARGET_P95_MS,
                "server_cpu_ms_per_signin_below": TARGET_CARD_CPU_MS,
                "card_ratio_at_least": RATE_TARGETS["card_ratio_at_least"],
                "rates": RATE_TARGETS_NOTE,
            },
            "crypto_floor_per_signin": floor,
            "results": results,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
