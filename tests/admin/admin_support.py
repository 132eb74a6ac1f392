"""Helpers for the local administrators' tests (a plain module: tests have no packages).

A test app gets a test-only route that opens a sign-in session exactly as the card (or
password) flow completes one — `complete_signin`, which also audits it — so the console
sees a genuine card session and sign-in history without a card at hand.
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path
from typing import Any

from broker_support import broker_of, csrf_token_from, install_test_signin
from flask import Flask
from flask.testing import FlaskClient
from oidc_support import basic, write_test_clients
from werkzeug.test import TestResponse

from careid_broker.oidc.client_secrets import hash_secret
from careid_broker.store import LinkMode, NewRegistration, RegistrationRecord

LEE = "lee.admin@nhs.net"
ALEX = "alex.morgan@nhs.net"
KIM = "kim.taylor@nhs.net"
SAM = "sam.patel@nhs.net"
UUIDS = {LEE: "555000000004", ALEX: "555000000001", KIM: "555000000005", SAM: "555000000002"}
ORGS = {LEE: "RX1", ALEX: "RX1", KIM: "Y00001", SAM: "RX1"}
ISSUER_DN = "CN=Care Identity Dev Issuing CA,O=NHS Demo"

READER_SECRET = "reader-secret-for-the-admin-api-tests-01"
WRITER_SECRET = "writer-secret-for-the-admin-api-tests-02"
OTHER_ORG_SECRET = "other-org-secret-for-the-admin-tests-03"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _fast_hash(secret: str) -> str:
    return hash_secret(secret, log2_n=10)  # cheap scrypt: tests check behaviour, not cost


def api_settings() -> dict[str, Any]:
    """An `[api]` section: a reader and a writer for RX1, a writer for Y00001."""
    return {
        "token_lifetime_seconds": 600,
        "clients": {
            "rx1-reader": {
                "name": "RX1 reporting",
                "secret_hash": _fast_hash(READER_SECRET),
                "scopes": ["registrations:read"],
                "org_codes": ["RX1"],
            },
            "rx1-writer": {
                "name": "RX1 leavers tool",
                "secret_hash": _fast_hash(WRITER_SECRET),
                "scopes": ["registrations:read", "registrations:write"],
                "org_codes": ["rx1"],
            },
            "y1-writer": {
                "name": "Y00001 leavers tool",
                "secret_hash": _fast_hash(OTHER_ORG_SECRET),
                "scopes": ["registrations:read", "registrations:write"],
                "org_codes": ["Y00001"],
            },
        },
    }


def make_admin_app(
    app_factory: Any, tmp_path: Path, *, backchannel_uri: str | None = None, **sections: Any
) -> Flask:
    """An app with the OIDC test clients, the API clients and the test sign-in route."""
    clients = write_test_clients(
        tmp_path / "admin-test-clients.toml", backchannel_uri=backchannel_uri
    )
    settings: dict[str, Any] = {"oidc": {"clients_file": str(clients)}, "api": api_settings()}
    settings.update(sections)
    app: Flask = app_factory(**settings)
    install_test_signin(app)
    return app


def sign_in(client: FlaskClient, mail: str, *, method: str = "card") -> None:
    """Sign this browser in (card by default)."""
    response = client.post("/_test/signin", data={"mail": mail, "method": method})
    assert response.status_code == 204, response.get_data(as_text=True)


def register(
    app: Flask,
    mail: str,
    *,
    uuid: str | None = None,
    org: str | None = None,
    how: str = "self-service",
) -> RegistrationRecord:
    """Store a registration as the registration flow does."""
    card_uuid = uuid or UUIDS[mail]
    return broker_of(app).repos.registrations.create(
        NewRegistration(
            card_uuid=card_uuid,
            account_mail=mail,
            account_dn=f"uid={mail.split('@')[0]},ou=people,dc=nhs,dc=example",
            org_code=org or ORGS[mail],
            link_mode=LinkMode.UUID,
            cert_issuer_dn=ISSUER_DN,
            cert_serial=hashlib.sha256(card_uuid.encode()).hexdigest()[:16],
            cert_fingerprint=hashlib.sha256(f"cert:{card_uuid}".encode()).hexdigest(),
            how=how,
        )
    )


def page_csrf(client: FlaskClient, path: str) -> tuple[TestResponse, str]:
    """GET a page with a form; (response, its CSRF token)."""
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response, csrf_token_from(response.get_data(as_text=True))


_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def confirmation_form(
    client: FlaskClient, mail: str, reason: str = "lost_card", reason_text: str | None = None
) -> dict[str, str]:
    """The removal's confirmation form as its page builds it (step 2 posted)."""
    _, token = page_csrf(client, f"/admin/users/{mail}/remove")
    form = {
        "csrf_token": token,
        "reason": reason,
        **({"reason_text": reason_text} if reason_text else {}),
    }
    page = client.post(f"/admin/users/{mail}/remove", data=form)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    text = (
        page.get_data(as_text=True).split('id="confirm-remove-form"', 1)[1].split("</form>", 1)[0]
    )
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(text)}


def api_token(client: FlaskClient, client_id: str, secret: str, scope: str | None = None) -> str:
    """A bearer token from /api/v1/token (client_secret_basic)."""
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = client.post("/api/v1/token", data=form, headers=basic(client_id, secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    token = response.get_json()["access_token"]
    assert isinstance(token, str)
    return token


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a bearer token."""
    return {"Authorization": f"Bearer {token}"}
