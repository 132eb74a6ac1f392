"""CSRF: every form post needs the session-bound token; refusals are coded and audited."""

from __future__ import annotations

import pytest
from broker_support import (
    DEMO_PASSWORD,
    AppFactory,
    broker_of,
    cookie_value,
    error_code_of,
    login_form,
)
from flask import Flask
from flask.testing import FlaskClient

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
