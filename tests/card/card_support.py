"""Helpers for the card sign-in and registration tests (a plain module, no package).

- `SimulatedAgent`: a card's software key and certificate from the development PKI,
  signing exactly as the agent does (`digest_to_sign` + the key, ECDSA as raw r||s).
- `CardBrowser`: one browser (a Flask test client) driving the login and registration
  pages' JSON endpoints the way `card-signin.js` and `register.js` do.
- `CardPki`: the development PKI the tests trust, its OCSP server, and issued cards.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from broker_support import (
    DEMO_PASSWORD,
    broker_of,
    browser_csrf,
    csrf_token_from,
    form_of,
    step_from,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from careid_broker.store import (
    AuditRecord,
    LinkMode,
    NewRegistration,
    RegistrationRecord,
)
from careid_devkit.card_profile import CardProfile
from careid_devkit.ocsp_responder import PkiServer
from careid_devkit.pki import Pki
from careid_protocol.token import (
    algorithm_for_key,
    digest_to_sign,
    ecdsa_der_to_raw,
)

ISSUER = "http://localhost:5000"
PIN = "123456"
_DATA_CSRF = re.compile(r'data-csrf-token="([^"]+)"')

# The demo directory's people (config/ldap/demo.ldif) and their Care Identity UUIDs.
ALEX = ("alex.morgan@nhs.net", "555000000001", "Alex Morgan")  # all in order
SAM = ("sam.patel@nhs.net", "555000000002", "Sam Patel")  # AUP never accepted
JO = ("jo.bloggs@nhs.net", "555000000003", "Jo Bloggs")  # account disabled
LEE = ("lee.admin@nhs.net", "555000000004", "Lee Admin")
KIM = ("kim.taylor@nhs.net", "555000000005", "Kim Taylor")
PAT = ("pat.jones@nhs.net", "555000000006", "Pat Jones")  # Care Identity inactive
CHRIS = ("chris.old@nhs.net", "555000000007", "Chris Old")  # an old AUP version
UNKNOWN_UUID = "555000000099"  # no account, no Care Identity record


class SimulatedAgent:
    """A card's key and certificate, signing challenges as careid-agent does."""

    def __init__(self, profile: CardProfile, *, agent_version: str = "careid-agent/test") -> None:
        self.profile = profile
        self.certificate = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
        self._key = serialization.load_pem_private_key(profile.private_key_pem.encode(), None)
        self.algorithm = algorithm_for_key(self.certificate.public_key())
        self.agent_version = agent_version

    @property
    def uuid(self) -> str:
        return self.profile.uuid

    @property
    def serial_hex(self) -> str:
        return f"{self.certificate.serial_number:X}"

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def sign(
        self, challenge: str, *, origin: str = ISSUER, certificate: bytes | None = None
    ) -> dict[str, str]:
        """The `careid-auth:1` token for `challenge`, signed for `origin`; carrying
        `certificate` in place of the card's when given (a damaged one, say)."""
        import base64

        algorithm = self.algorithm
        digest = digest_to_sign(origin, challenge, algorithm)
        prehashed = Prehashed(algorithm.hash())
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            der = self._key.sign(digest, ec.ECDSA(prehashed))
            signature = ecdsa_der_to_raw(der, algorithm)
        elif isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(digest, padding.PKCS1v15(), prehashed)
        else:  # pragma: no cover - the dev PKI issues EC and RSA keys only
            raise TypeError("unsupported card key")
        return {
            "format": "careid-auth:1",
            "certificate": base64.b64encode(certificate or self.certificate_der).decode(),
            "algorithm": algorithm.value,
            "signature": base64.b64encode(signature).decode(),
            "agentVersion": self.agent_version,
        }


@dataclass
class CardPki:
    """The trusted development PKI, its OCSP/CRL server, and a card per test person."""

    pki: Pki
    server: PkiServer
    untrusted: Pki
    cards: dict[str, CardProfile] = field(default_factory=dict)

    def pki_settings(self, **overrides: Any) -> dict[str, Any]:
        """A `[pki]` table trusting this PKI (OCSP from the certificates' AIA URL)."""
        settings: dict[str, Any] = {
            "trust_anchors": [str(self.pki.paths.root_certificate)],
            "intermediates": [str(self.pki.paths.issuing_certificate)],
            "revocation": "ocsp",
            "ocsp": {"timeout_seconds": 2},
        }
        settings.update(overrides)
        return settings

    def agent(self, name: str) -> SimulatedAgent:
        return SimulatedAgent(self.cards[name])

    def issue(self, name: str, uuid: str, holder: str, **kwargs: Any) -> CardProfile:
        """Issue (and remember) a card of this PKI."""
        kwargs.setdefault("algorithm", "p256")
        profile = self.pki.issue_card(uuid=uuid, name=holder, pin=PIN, **kwargs)
        self.cards[name] = profile
        return profile


def register_card(
    app: Flask,
    agent: SimulatedAgent,
    mail: str,
    *,
    org_code: str = "RX1",
    link_mode: LinkMode = LinkMode.UUID,
) -> RegistrationRecord:
    """Store a registration directly (what a finished registration leaves)."""
    certificate = agent.certificate
    return broker_of(app).repos.registrations.create(
        NewRegistration(
            card_uuid=agent.uuid,
            account_mail=mail,
            account_dn=f"uid={mail.split('@')[0]},ou=people,dc=nhs,dc=example",
            org_code=org_code,
            link_mode=link_mode,
            cert_issuer_dn=certificate.issuer.rfc4514_string(),
            cert_serial=agent.serial_hex,
            cert_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
            cert_der=certificate.public_bytes(serialization.Encoding.DER),
        )
    )


def last_audit(app: Flask, event: str) -> AuditRecord:
    """The newest audit entry of an event."""
    entries = broker_of(app).repos.audit.list_recent(event_prefix=event, limit=1)
    assert entries, f"no {event} audit entry"
    return entries[0]


def audits(app: Flask, event: str) -> list[AuditRecord]:
    """Every audit entry of an event, newest first."""
    return list(broker_of(app).repos.audit.list_recent(event_prefix=event, limit=200))


def page_csrf(page: str) -> str:
    """The CSRF token a card page hands its script (or its forms' hidden field)."""
    match = _DATA_CSRF.search(page)
    if match:
        return html.unescape(match.group(1))
    return csrf_token_from(page)


class CardBrowser:
    """One browser signing in by card through the broker's JSON endpoints."""

    def __init__(self, client: FlaskClient, *, origin: str = ISSUER) -> None:
        self.client = client
        self.origin = origin
        self.csrf: str | None = None
        # The registration step the last registration page named (its script sends it).
        self.step: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        assert self.csrf, "open a page first (it hands the script its CSRF token)"
        headers = {
            "Origin": self.origin,
            "Sec-Fetch-Site": "same-origin",
            "X-CSRF-Token": self.csrf,
            "Accept": "application/json",
        }
        headers.update(extra)
        return headers

    def open_login(self, tx: str | None = None, **params: str) -> TestResponse:
        query = {"tx": tx, **params} if tx else dict(params)
        page = self.client.get("/login", query_string=query)
        assert page.status_code == 200, page.get_data(as_text=True)
        text = page.get_data(as_text=True)
        if "csrf" not in text:  # signed in already: "You are signed in" has no form
            text = self.client.get("/signout").get_data(as_text=True)
        self.csrf = page_csrf(text)
        return page

    def post_json(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> TestResponse:
        return self.client.post(path, json=dict(body), headers=dict(headers or self.headers()))

    def challenge(self, tx: str | None = None, *, path: str = "/card/challenge") -> TestResponse:
        return self.post_json(path, {"tx": tx})

    def authenticate(
        self,
        token: Mapping[str, Any],
        challenge: str,
        tx: str | None = None,
        *,
        path: str = "/card/authenticate",
    ) -> TestResponse:
        body = {"tx": tx, "challenge": challenge, "token": dict(token)}
        if path.startswith("/register/"):
            body["step"] = self.step
        return self.post_json(path, body)

    def sign_in(
        self, agent: SimulatedAgent, tx: str | None = None, *, origin: str = ISSUER
    ) -> TestResponse:
        """challenge → the agent signs → authenticate: the broker's last answer."""
        issued = self.challenge(tx)
        assert issued.status_code == 200, issued.get_data(as_text=True)
        challenge = issued.get_json()["challenge"]
        return self.authenticate(agent.sign(challenge, origin=origin), challenge, tx)

    # Registration ----------------------------------------------------------------------

    def register_password(
        self, mail: str, password: str = DEMO_PASSWORD, *, tx: str | None = None
    ) -> TestResponse:
        """Step 1: the registration page, then its password form (redirects not followed)."""
        page = self.client.get("/register", query_string={"tx": tx} if tx else None)
        assert page.status_code == 200, page.get_data(as_text=True)
        self.csrf = csrf_token_from(page.get_data(as_text=True))
        form = {"csrf_token": self.csrf, "email": mail, "password": password}
        if tx:
            form["tx"] = tx
        answer = self.client.post("/register", data=form)
        self.csrf = browser_csrf(self.client)  # the form spent the page's token
        return answer

    def open_card_step(self) -> TestResponse:
        """Step 2's page, as its script starts: its CSRF token and the step it names."""
        page = self.client.get("/register/card")
        self.csrf = page_csrf(page.get_data(as_text=True))
        self.step = step_from(page.get_data(as_text=True))
        return page

    def register_card(self, agent: SimulatedAgent, *, origin: str = ISSUER) -> TestResponse:
        """Step 2: the card page, then the challenge → sign → authenticate round."""
        page = self.open_card_step()
        assert page.status_code == 200, page.get_data(as_text=True)
        issued = self.challenge(path="/register/challenge")
        assert issued.status_code == 200, issued.get_data(as_text=True)
        challenge = issued.get_json()["challenge"]
        return self.authenticate(
            agent.sign(challenge, origin=origin), challenge, path="/register/authenticate"
        )

    def register_confirm(self) -> TestResponse:
        """Step 3: the confirmation page, then its Confirm button."""
        page = self.client.get("/register/confirm")
        assert page.status_code == 200, page.get_data(as_text=True)
        return self.client.post("/register/confirm", data=form_of(page.get_data(as_text=True)))

    def register(self, agent: SimulatedAgent, mail: str, *, tx: str | None = None) -> TestResponse:
        """All three steps, each asserted to succeed; the final (signed-in) page."""
        first = self.register_password(mail, tx=tx)
        assert first.status_code == 303, first.get_data(as_text=True)
        second = self.register_card(agent)
        assert second.status_code == 200, second.get_data(as_text=True)
        done = self.register_confirm()
        assert done.status_code == 200, done.get_data(as_text=True)
        return done


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def days(count: int) -> timedelta:
    return timedelta(days=count)
