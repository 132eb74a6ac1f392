"""What the demo checks at start-up: every service answers, and the card path signs.

The signature check is the demo's first form kept as a step: the virtual card goes into
the reader, the real agent code reads it through PC/SC and has it sign a
`careid-auth:1` challenge for the broker's origin, and `careid_protocol` verifies the
token as the broker would. With the `env` PIN provider the same is done once more
through the running agent's own API (`POST /v1/authenticate`).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from careid_agent.card import CardService
from careid_agent.transport import connect
from careid_devkit.card_profile import CardProfile
from careid_devkit.demo.chain import DemoChain
from careid_devkit.demo.processes import http_answers
from careid_protocol.token import (
    AuthToken,
    SignatureAlgorithm,
    algorithm_for_key,
    digest_to_sign,
    ecdsa_der_to_raw,
    verify_token,
)

Say = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class ServiceCheck:
    """One part and whether it answered."""

    name: str
    url: str
    ok: bool
    detail: str


def check_services(chain: DemoChain) -> list[ServiceCheck]:
    """Ask every part of the chain whether it is up."""
    urls = chain.urls
    agent_headers = {"Origin": urls.broker}
    probes: list[tuple[str, str, dict[str, str]]] = [
        ("broker", f"{urls.broker}/readyz", {}),
        ("webmail", f"{urls.webmail}/", {}),
        ("agent", f"{urls.agent}/v1/status", agent_headers),
        ("card tray", f"{urls.tray}/cards", {}),
        ("OCSP/CRL responder", f"{urls.pki}/healthz", {}),
    ]
    checks = []
    for name, url, headers in probes:
        status = http_answers(url, headers=headers, timeout=3.0)
        checks.append(
            ServiceCheck(
                name=name,
                url=url,
                ok=status == 200,
                detail=f"HTTP {status}" if status is not None else "no answer",
            )
        )
    directory_ok = chain.slapd is not None and chain.slapd.running
    checks.append(
        ServiceCheck(
            name="directory (slapd)",
            url=chain.slapd.url if chain.slapd else "-",
            ok=directory_ok,
            detail="running" if directory_ok else "not running",
        )
    )
    return checks


def agent_status(chain: DemoChain) -> dict[str, object]:
    """The agent's GET /v1/status, as the broker's sign-in page sees it."""
    request = urllib.request.Request(  # noqa: S310 - the demo's own loopback URL
        f"{chain.urls.agent}/v1/status", headers={"Origin": chain.urls.broker}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        body: dict[str, object] = json.loads(response.read())
    return body


def wait_for_agent_card(chain: DemoChain, uuid: str | None, timeout: float = 10.0) -> bool:
    """Wait until the agent reports this card in the reader (None: the reader empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = agent_status(chain)
        card = status.get("card")
        seen = card.get("uuid") if isinstance(card, dict) else None
        if (uuid is None and not status.get("cardPresent")) or (uuid and seen == uuid):
            return True
        time.sleep(0.1)
    return False


def _new_challenge() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def pcsc_signature_check(chain: DemoChain, profile: CardProfile, say: Say) -> bool:
    """Sign a challenge with the card through PC/SC (PIN from the profile) and verify it."""
    origin, challenge = chain.urls.broker, _new_challenge()
    service = CardService(lambda: connect(chain.settings.reader))
    identity = service.read_identity()
    alg = algorithm_for_key(identity.certificate.public_key())
    result = service.sign(
        digest_to_sign(origin, challenge, alg),
        alg.hash(),
        lambda _request: bytearray(profile.pin.encode()),
    )
    signature = result.signature
    if alg is not SignatureAlgorithm.RS256:
        signature = ecdsa_der_to_raw(signature, alg)
    token = AuthToken(
        certificate=result.identity.certificate_der,
        algorithm=alg,
        signature=signature,
        agent_version="demo",
    ).to_json()
    certificate = verify_token(token, origin, challenge)
    say(f"  origin     {origin}")
    say(f"  challenge  {challenge}")
    say(f"  algorithm  {alg.value}, signature {len(signature)} bytes")
    say(f"  verified   yes, by the certificate of {certificate.subject.rfc4514_string()}")
    return True


def agent_signature_check(chain: DemoChain, say: Say) -> bool:
    """Have the running agent sign for the broker's origin (env PIN) and verify the token."""
    origin, challenge = chain.urls.broker, _new_challenge()
    request = urllib.request.Request(  # noqa: S310 - the demo's own loopback URL
        f"{chain.urls.agent}/v1/authenticate",
        data=json.dumps({"challenge": challenge}).encode(),
        headers={"Origin": origin, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            token = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        say(f"  the agent refused: {exc.read().decode(errors='replace')[:300]}")
        return False
    certificate = verify_token(token, origin, challenge)
    algorithm = token["algorithm"]
    say(f"  agent      POST /v1/authenticate for {origin}: {algorithm} token")
    say(f"  verified   yes, by the certificate of {certificate.subject.rfc4514_string()}")
    return True
