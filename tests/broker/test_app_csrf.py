"""CSRF: every form post needs the session-bound token; refusals are coded and audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker_support import (
    DEMO_PASSWORD,
    AppFactory,
    broker_of,
    cookie_value,
    csrf_token_from,
    error_code_of,
    login_form,
    password_login,
)
from flask import Flask
from flask.testing import FlaskClient
from oidc_support import Browser, make_oidc_app, query_of

from careid_broker.store import Outcome
from careid_broker.web.csrf import csrf_exempt


def _form(token: str | None) -> dict[str, str]:
    form = {"email": "alex.morgan@nhs.net", "password": DEMO_PASSWORD}
    if token is not None:
        form["csrf_token"] = token
    return form


@pytest.mark.parametrize("token", [None, "", "wrong-token", "x" * 5000])
def test_a_missing_or_wrong_token_is_refused_and_audited(
    app: Flask, client: FlaskClient, token: str | None
) -> None:
    login_form(client)  # the browser has a session with a real token
    response = client.post("/login", data=_form(token))
    assert response.status_code == 400
    assert error_code_of(response) == "csrf_invalid"
    assert cookie_value(client, "careid-signin") is None
    assert broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net") == []
    entry = broker_of(app).repos.audit.list_recent(limit=1)[0]
    assert entry.event == "csrf.refused" and entry.outcome is Outcome.FAILURE
    assert entry.error_code == "csrf_invalid" and entry.client_address == "127.0.0.1"
    assert broker_of(app).metrics.csrf_refusals.value() == 1


def test_a_token_from_another_browser_is_refused(app: Flask, client: FlaskClient) -> None:
    other = app.test_client()
    stolen = login_form(other)
    login_form(client)
    response = client.post("/login", data=_form(stolen))
    assert error_code_of(response) == "csrf_invalid"


def test_a_post_without_any_browser_session_is_refused(client: FlaskClient) -> None:
    response = client.post("/login", data=_form("anything"))
    assert error_code_of(response) == "csrf_invalid"


def test_the_right_token_passes(client: FlaskClient) -> None:
    response = client.post("/login", data=_form(login_form(client)))
    assert response.status_code == 303


def test_the_header_form_of_the_token_works_for_same_origin_scripts(client: FlaskClient) -> None:
    token = login_form(client)
    response = client.post("/login", data=_form(None), headers={"X-CSRF-Token": token})
    assert response.status_code == 303


def test_signout_is_protected_too(client: FlaskClient) -> None:
    client.post("/login", data=_form(login_form(client)))
    response = client.post("/signout", data={})
    assert error_code_of(response) == "csrf_invalid"
    assert "You are signed in" in client.get("/login").get_data(as_text=True)


def test_exempt_views_take_posts_without_a_token(app_factory: AppFactory) -> None:
    app = app_factory()

    @csrf_exempt
    def machine() -> str:
        return "ok"

    def browser() -> str:
        return "ok"

    app.add_url_rule("/test/machine", view_func=machine, methods=["POST"])
    app.add_url_rule("/test/browser", view_func=browser, methods=["POST"])
    client = app.test_client()
    assert client.post("/test/machine").status_code == 200
    assert client.post("/test/browser").status_code == 400


def test_a_form_expired_by_another_tab_is_shown_again_keeping_the_rps_request(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    """Signing in and out in a second tab replaces the token the first tab's form holds:
    the form comes back with a fresh token, the relying party's request still in it."""
    oidc_app = make_oidc_app(app_factory, tmp_path)
    browser = Browser(oidc_app.test_client())
    location = browser.authorize().location
    tx = query_of(location)["tx"]
    stale = csrf_token_from(browser.client.get(location).get_data(as_text=True))
    # The second tab.
    password_login(browser.client, "kim.taylor@nhs.net")
    token = csrf_token_from(browser.client.get("/signout").get_data(as_text=True))
    browser.client.post("/signout", data={"csrf_token": token})

    form = {"csrf_token": stale, "tx": tx, "email": "alex.morgan@nhs.net", "password": "x"}
    again = browser.client.post("/login", data=form)
    assert again.status_code == 400 and error_code_of(again) == "csrf_invalid"
    page = again.get_data(as_text=True)
    assert "Sign in" in page and f'name="tx" value="{tx}"' in page
    assert 'value="alex.morgan@nhs.net"' in page and "Reload the page" not in page
    fresh = csrf_token_from(page)
    assert fresh != stale
    done = browser.client.post(
        "/login", data={**form, "csrf_token": fresh, "password": DEMO_PASSWORD}
    )
    assert done.status_code == 303
    assert done.headers["Location"].startswith(f"{browser.redirect_uri}?code=")


def test_an_expired_form_without_a_page_of_its_own_links_back_to_one(
    app: Flask, client: FlaskClient
) -> None:
    password_login(client, "alex.morgan@nhs.net")
    refused = client.post("/signout", data={"csrf_token": "stale" * 8})
    assert refused.status_code == 400 and error_code_of(refused) == "csrf_invalid"
    page = refused.get_data(as_text=True)
    assert '<a class="button" href="/signout">Go back to the form</a>' in page


def test_the_browser_session_follows_the_secret_key_and_its_fallbacks(
    app: Flask, client: FlaskClient
) -> None:
    # The session's serializer is built once per key set, not per request: a key
    # change (a rotation with the old key as a fallback) must still be honoured.
    token = login_form(client)
    interface = app.session_interface
    assert interface.get_signing_serializer(app) is interface.get_signing_serializer(app)
    old_key = app.secret_key
    app.secret_key = "another-secret-key-of-a-good-length-0123456789"
    try:
        app.config["SECRET_KEY_FALLBACKS"] = [old_key]
        signed_with_old = login_form(client)
        assert signed_with_old == token  # the old cookie still opens: same session
        app.config["SECRET_KEY_FALLBACKS"] = []
        response = client.post("/login", data=_form(token))
        assert error_code_of(response) == "csrf_invalid"  # the old key no longer opens it
    finally:
        app.secret_key = old_key
        app.config["SECRET_KEY_FALLBACKS"] = []
