"""Helpers for the broker app tests (a plain module: the tests folder has no packages)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from careid_broker.broker import Broker
from careid_broker.directory import Directory
from careid_broker.signin.sessions import SigninDecision
from careid_broker.store import AuthorizationRequest, CertificateRef
from careid_broker.web import browser_binding, context
from careid_broker.web.csrf import csrf_exempt
from careid_broker.web.signin_cookie import complete_signin

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "src" / "careid_broker" / "templates"
DEMO_PASSWORD = "Demo-Password-1"
TEST_SECRET_KEY = "test-secret-key-for-the-broker-tests-0123456789"
# The clients file used when the repository has none yet: one public client.
FALLBACK_CLIENTS = """\
[clients.testrp]
name = "Test RP"
token_endpoint_auth_method = "none"
redirect_uris = ["https://rp.example.test/callback"]
"""

# `app_factory(directory_slapd=None, env=None, **section_overrides) -> Flask`
AppFactory = Callable[..., Flask]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_STEP = re.compile(r'(?:name="step" value|data-step)="([^"]+)"')


def csrf_token_from(page: str) -> str:
    """The CSRF token in a rendered form."""
    match = _CSRF.search(page)
    assert match is not None, "no csrf_token field on the page"
    return html.unescape(match.group(1))


def step_from(page: str) -> str | None:
    """The tag of the step a page's forms act on (its hidden `step` field, or the card
    page's `data-step` for its script), if it has one."""
    match = _STEP.search(page)
    return html.unescape(match.group(1)) if match else None


def form_of(page: str, **fields: str) -> dict[str, str]:
    """A form posted from `page` as a browser would: its CSRF token, the step it names
    (if any) and `fields`."""
    form = {"csrf_token": csrf_token_from(page)}
    step = step_from(page)
    if step is not None:
        form["step"] = step
    return {**form, **fields}


def browser_csrf(client: FlaskClient) -> str:
    """The browser's CSRF token now: the one the next page it loads carries. (A form
    that carries a password spends the token it was sent with, `spends_token`, so a
    script's token from the page before is stale once the browser follows a redirect.)"""
    with client.session_transaction() as session:
        token = session.get("csrf")
    assert isinstance(token, str) and token, "no CSRF token in this browser's session"
    return token


def login_form(client: FlaskClient, tx: str | None = None) -> str:
    """GET the sign-in page and return the browser's CSRF token.

    Signed in already and without `tx`, /login says so and shows no form; the token is
    then read from the sign-out page (one token per browser session).
    """
    page = client.get("/login", query_string={"tx": tx} if tx else None)
    assert page.status_code == 200, page.get_data(as_text=True)
    text = page.get_data(as_text=True)
    if 'name="csrf_token"' not in text:
        text = client.get("/signout").get_data(as_text=True)
    return csrf_token_from(text)


def password_login(
    client: FlaskClient,
    mail: str,
    password: str = DEMO_PASSWORD,
    tx: str | None = None,
    *,
    extra: Mapping[str, str] | None = None,
) -> TestResponse:
    """Fill in and post the sign-in form as a browser would; the POST's response."""
    form: dict[str, str] = {
        "csrf_token": login_form(client, tx),
        "email": mail,
        "password": password,
    }
    if tx:
        form["tx"] = tx
    form.update(extra or {})
    return client.post("/login", data=form)


def cookie_value(client: FlaskClient, name: str) -> str | None:
    """A cookie the test client holds (any domain/path), or None."""
    cookie = client.get_cookie(name)
    return cookie.value if cookie is not None else None


def error_code_of(response: TestResponse) -> str | None:
    """The stable error code a page or JSON error carries."""
    if response.is_json:
        body: Any = response.get_json()
        return body.get("error") if isinstance(body, dict) else None
    match = re.search(r'data-error-code="([a-z0-9_]+)"', response.get_data(as_text=True))
    return match.group(1) if match else None


class SwitchableDirectory:
    """A test double in front of an app's real directory: `use(other)` changes what the
    broker sees mid-test (a directory going down, rights taken away), `restore()` puts
    the real one back. Everything else is the real directory's."""

    def __init__(self, real: Directory) -> None:
        self.real = real
        self._current: Directory = real

    def use(self, other: object) -> None:
        self._current = other  # type: ignore[assignment]

    def restore(self) -> None:
        self._current = self.real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)


# The demo relying party in config/clients.toml, which the test apps load.
DEMO_RP = "webmail"
DEMO_RP_CALLBACK = "http://localhost:5001/callback"


def started_in(client: FlaskClient, tx: str) -> str:
    """Bind login transaction `tx` to `client`'s browser session, as the `/authorize`
    request that makes one does (only that browser may go on with it); `tx`."""
    with client.session_transaction() as session:
        known = session.get(browser_binding.RP_TRANSACTIONS_KEY, [])
        session[browser_binding.RP_TRANSACTIONS_KEY] = [*known, browser_binding.remembered_as(tx)][
            -browser_binding.MAX_REMEMBERED :
        ]
    return tx


def rp_transaction(app: Flask, client: FlaskClient, **request: Any) -> str:
    """A login transaction for the demo RP as /authorize would store it (PKCE included),
    started in `client`'s browser, so a sign-in for it there goes on to a code;
    `request` overrides its fields."""
    fields: dict[str, Any] = {
        "client_id": DEMO_RP,
        "redirect_uri": DEMO_RP_CALLBACK,
        "scope": "openid email",
        "state": "rp-state",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        **request,
    }
    created = broker_of(app).repos.transactions.create(AuthorizationRequest(**fields))
    return started_in(client, created.transaction_id)


def broker_of(app: Flask) -> Broker:
    """The app's one `Broker` (outside a request)."""
    return context.broker_of(app)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_broker_toml(path: Path, sections: Mapping[str, Mapping[str, object]]) -> Path:
    """A broker.toml from flat sections (enough for the test settings and the CLI tests)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def install_test_signin(app: Flask) -> None:
    """`/_test/signin?mail=…&method=card|pwd` (GET from a browser, POST from a test
    client): a sign-in session opened as the real flows open one (test material only)."""
    routes = Blueprint("test_signin", __name__)

    @routes.route("/_test/signin", methods=["GET", "POST"])
    @csrf_exempt
    def signin() -> tuple[str, int]:
        mail = request.values["mail"]
        card = request.values.get("method", "card") == "card"
        account = broker_of(app).directory.find_account(mail)
        assert account is not None, mail
        complete_signin(
            SigninDecision.by_card(
                account,
                card_uuid=account.care_identity_uuid,
                # No card was shown: a certificate no CA of the tests issues.
                certificate=CertificateRef("CN=test sign-in", "00"),
                org_code=account.org_code,
                card_session=True,
            )
            if card
            else SigninDecision.by_password(account)
        )
        # A browser navigates here and needs a page; a test client takes "no content".
        return ("signed in", 200) if request.method == "GET" else ("", 204)

    app.register_blueprint(routes)
