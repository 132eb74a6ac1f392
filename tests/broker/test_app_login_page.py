"""The sign-in page: accessible markup, strict CSP with no inline script, CSRF field."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from broker_support import TEMPLATES, AppFactory, broker_of, error_code_of, started_in
from flask import Flask, Response
from flask.testing import FlaskClient

from careid_broker.store import AuthorizationRequest


class _Markup(HTMLParser):
    """Collects labels, inputs, buttons and script/style use from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.buttons: list[str] = []
        self.inline_scripts = 0
        self.style_attributes = 0
        self._label_for: str | None = None
        self._in_button = False
        self._in_script = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "style" in attributes or any(name.startswith("on") for name in attributes):
            self.style_attributes += 1
        if tag == "label":
            self._label_for = attributes.get("for")
            self._text = []
        elif tag == "input" and attributes.get("id"):
            self.inputs[str(attributes["id"])] = attributes
        elif tag == "button":
            self._in_button = True
            self._text = []
        elif tag == "script":
            self._in_script = "src" not in attributes
        elif tag == "style":
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label_for:
            self.labels[self._label_for] = " ".join("".join(self._text).split())
            self._label_for = None
        elif tag == "button":
            self.buttons.append(" ".join("".join(self._text).split()))
            self._in_button = False
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._label_for is not None or self._in_button:
            self._text.append(data)
        if self._in_script and data.strip():
            self.inline_scripts += 1


def parse(page: str) -> _Markup:
    markup = _Markup()
    markup.feed(page)
    return markup


def test_the_form_has_labelled_fields_a_sign_in_button_and_the_card_option(
    client: FlaskClient,
) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    markup = parse(response.get_data(as_text=True))
    assert markup.labels == {"email": "Email address", "password": "Password"}
    assert markup.inputs["email"]["type"] == "email"
    assert markup.inputs["email"]["autocomplete"] == "username"
    assert markup.inputs["password"]["type"] == "password"
    assert markup.inputs["password"]["autocomplete"] == "current-password"
    assert "Sign in" in markup.buttons
    assert "Sign in with your smartcard" in markup.buttons
    assert markup.inline_scripts == 0 and markup.style_attributes == 0
    page = response.get_data(as_text=True)
    assert re.search(r'<html lang="en-GB">', page)
    assert 'href="#main-content"' in page and 'id="main-content"' in page


def test_csp_is_strict_and_the_usual_security_headers_are_set(client: FlaskClient) -> None:
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    # Development mode: no HSTS (plain http://localhost must keep working).
    assert "Strict-Transport-Security" not in response.headers
    for name in ("Content-Security-Policy", "X-Frame-Options", "Cache-Control"):
        assert len(response.headers.getlist(name)) == 1, name


def test_a_views_own_security_headers_win(app_factory: AppFactory) -> None:
    app = app_factory()
    own = {
        "Content-Security-Policy": "default-src 'none'",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "private, max-age=5",
    }
    app.add_url_rule("/_test/own-headers", "own_headers", lambda: Response("x", headers=own))
    response = app.test_client().get("/_test/own-headers")
    for name, value in own.items():
        assert response.headers.getlist(name) == [value], name
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # the rest still added


def test_discovery_keeps_its_own_cache_control(client: FlaskClient) -> None:
    # Discovery is public and cacheable: its own Cache-Control stays, the only one.
    response = client.get("/.well-known/openid-configuration")
    (cache_control,) = response.headers.getlist("Cache-Control")
    assert cache_control.startswith("public, max-age=")
    assert response.headers["X-Frame-Options"] == "DENY"


def test_outside_development_hsts_is_sent(app_factory: AppFactory) -> None:
    app = app_factory(
        broker={"dev": False, "dev_disable_workers": False, "issuer": "https://sso.example.test"}
    )
    response = app.test_client().get("/login", base_url="https://sso.example.test")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_no_template_has_inline_script_style_or_event_handlers() -> None:
    templates = sorted(TEMPLATES.rglob("*.html"))
    assert templates, "no templates found"
    for path in templates:
        text = path.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", text, flags=re.IGNORECASE):
            assert "src=" in tag, f"{path.name}: inline <script>"
        assert not re.search(r"<style\b", text, flags=re.IGNORECASE), f"{path.name}: <style>"
        assert not re.search(r"\sstyle\s*=", text, flags=re.IGNORECASE), f"{path.name}: style="
        assert not re.search(r"\son[a-z]+\s*=", text, flags=re.IGNORECASE), f"{path.name}: on…="
        assert "javascript:" not in text.lower(), f"{path.name}: javascript: URL"


def test_the_stylesheet_is_served_from_the_broker(client: FlaskClient) -> None:
    with client.get("/static/broker.css") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/css"
        assert b".error-summary" in response.get_data()


def test_a_login_transaction_is_carried_and_its_rp_origin_allowed_as_form_action(
    app: Flask, client: FlaskClient
) -> None:
    tx = broker_of(app).repos.transactions.create(
        AuthorizationRequest(
            client_id="testrp",
            redirect_uri="https://rp.example.test:8443/callback",
            scope="openid",
            extras={"login_hint": "alex.morgan@nhs.net"},
        )
    )
    started_in(client, tx.transaction_id)
    response = client.get("/login", query_string={"tx": tx.transaction_id})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'name="tx" value="{tx.transaction_id}"' in page
    assert 'value="alex.morgan@nhs.net"' in page  # login_hint fills the address in
    csp = response.headers["Content-Security-Policy"]
    assert "form-action 'self' https://rp.example.test:8443" in csp


def test_a_card_only_request_shows_only_the_smartcard_option(
    app: Flask, client: FlaskClient
) -> None:
    tx = broker_of(app).repos.transactions.create(
        AuthorizationRequest(
            client_id="testrp",
            redirect_uri="https://rp.example.test/callback",
            scope="openid",
            acr_values="AAL3_ANY",
        )
    )
    started_in(client, tx.transaction_id)
    response = client.get("/login", query_string={"tx": tx.transaction_id, "card": "required"})
    markup = parse(response.get_data(as_text=True))
    assert markup.buttons == ["Sign in with your smartcard"]
    assert "password" not in markup.inputs


def test_an_unknown_or_finished_login_transaction_gets_an_error_page(
    app: Flask, client: FlaskClient
) -> None:
    response = client.get("/login", query_string={"tx": "no-such-transaction"})
    assert response.status_code == 400
    assert error_code_of(response) == "oidc_signin_expired"
    tx = broker_of(app).repos.transactions.create(
        AuthorizationRequest(client_id="testrp", redirect_uri="https://rp/cb", scope="openid")
    )
    started_in(client, tx.transaction_id)
    broker_of(app).repos.transactions.complete(tx.transaction_id)
    response = client.get("/login", query_string={"tx": tx.transaction_id})
    assert error_code_of(response) == "oidc_signin_expired"


def test_unknown_pages_and_methods_get_plain_error_pages(client: FlaskClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert error_code_of(response) == "page_not_found"
    response = client.put("/login")
    assert response.status_code == 405
    assert error_code_of(response) == "request_invalid"
    assert "GET" in response.headers["Allow"]
    response = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert response.get_json()["error"] == "page_not_found"
    assert response.get_json()["request_id"] == response.headers["X-Request-ID"]


def test_the_login_page_offers_first_time_registration_and_agent_help_a_way_back(
    card_app: Flask,
) -> None:
    client = card_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert 'href="/register" id="register-route-link">Register your smartcard</a>' in page
    help_page = client.get("/card/agent-help").get_data(as_text=True)
    assert 'id="agent-help-back" href="/login">Go back to the sign-in page</a>' in help_page
