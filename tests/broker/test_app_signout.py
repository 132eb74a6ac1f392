"""Signing out, and sessions ending by themselves (idle and absolute lifetime)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from broker_support import (
    AppFactory,
    broker_of,
    cookie_value,
    csrf_token_from,
    error_code_of,
    password_login,
)
from flask import Flask
from flask.testing import FlaskClient

from careid_broker.store import EndedSession, Outcome, StoreUnavailableError
from support.clock import FakeClock


def _signed_in(client: FlaskClient) -> bool:
    return "You are signed in" in client.get("/login").get_data(as_text=True)


def test_signout_asks_first_then_ends_the_session_and_tells_the_rps(
    app: Flask, client: FlaskClient, session_ended: list[EndedSession]
) -> None:
    password_login(client, "alex.morgan@nhs.net")
    sid = broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net")[0].sid
    broker_of(app).repos.sessions.add_relying_party(sid, "testrp")

    confirm = client.get("/signout")
    assert confirm.status_code == 200
    assert _signed_in(client)  # a GET changes nothing
    token = csrf_token_from(confirm.get_data(as_text=True))
    done = client.post("/signout", data={"csrf_token": token})
    assert done.status_code == 200
    assert "You have signed out" in done.get_data(as_text=True)
    assert cookie_value(client, "careid-signin") is None
    assert not _signed_in(client)

    record = broker_of(app).repos.sessions.get(sid)
    assert record is not None and record.end_reason == "logout"
    assert [e.sid for e in session_ended] == [sid]
    assert session_ended[0].relying_parties == ("testrp",)
    entry = broker_of(app).repos.audit.list_recent(event_prefix="session.", limit=1)[0]
    assert entry.outcome is Outcome.SUCCESS and entry.subject == "alex.morgan@nhs.net"
    assert entry.details["reason"] == "logout" and entry.details["relying_parties"] == ["testrp"]
    # The CSRF token was replaced: the old one no longer works.
    again = client.post("/signout", data={"csrf_token": token})
    assert again.status_code == 400


def test_signout_when_not_signed_in_is_harmless(
    client: FlaskClient, session_ended: list[EndedSession]
) -> None:
    page = client.get("/signout")
    assert "You are not signed in" in page.get_data(as_text=True)
    client.get("/login")
    token = csrf_token_from(client.get("/login").get_data(as_text=True))
    assert client.post("/signout", data={"csrf_token": token}).status_code == 200
    assert session_ended == []


def test_a_signout_the_database_could_not_record_keeps_the_session_and_can_be_retried(
    app: Flask,
    client: FlaskClient,
    session_ended: list[EndedSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Forgetting the cookie of a session that did not end would leave it open, its RPs
    # untold, with no way for this browser to sign it out (the next person at a shared
    # workstation signs in to the RPs as this one).
    password_login(client, "alex.morgan@nhs.net")
    sid = broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net")[0].sid
    broker_of(app).repos.sessions.add_relying_party(sid, "testrp")
    cookie = cookie_value(client, "careid-signin")
    token = csrf_token_from(client.get("/signout").get_data(as_text=True))

    def gone(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError(detail="test: the database went away")

    monkeypatch.setattr(broker_of(app).repos.sessions, "end_session", gone)
    failed = client.post("/signout", data={"csrf_token": token})
    assert failed.status_code == 503 and error_code_of(failed) == "store_unavailable"
    assert not any("careid-signin" in c for c in failed.headers.getlist("Set-Cookie"))
    monkeypatch.undo()

    assert cookie_value(client, "careid-signin") == cookie
    assert _signed_in(client)
    assert session_ended == []
    again = client.post("/signout", data={"csrf_token": token})
    assert again.status_code == 200 and "You have signed out" in again.get_data(as_text=True)
    assert cookie_value(client, "careid-signin") is None and not _signed_in(client)
    assert [e.sid for e in session_ended] == [sid]
    assert session_ended[0].relying_parties == ("testrp",)


def test_an_idle_session_ends_by_itself(
    app: Flask, client: FlaskClient, clock: FakeClock, session_ended: list[EndedSession]
) -> None:
    password_login(client, "alex.morgan@nhs.net")
    clock.advance(timedelta(hours=1))
    assert _signed_in(client)  # use within the idle limit keeps it alive …
    clock.advance(timedelta(hours=1, minutes=59))
    assert _signed_in(client)
    clock.advance(timedelta(hours=2, seconds=1))  # … and two idle hours end it
    assert not _signed_in(client)
    assert [e.reason for e in session_ended] == ["expired"]
    assert cookie_value(client, "careid-signin") is None


def test_a_session_ends_at_its_lifetime_however_busy(
    app_factory: AppFactory, clock: FakeClock, session_ended: list[EndedSession]
) -> None:
    app = app_factory(broker={"session_lifetime_seconds": 3600, "session_idle_seconds": 1800})
    client = app.test_client()
    password_login(client, "alex.morgan@nhs.net")
    for _ in range(3):
        clock.advance(timedelta(minutes=19))
        assert _signed_in(client)
    clock.advance(timedelta(minutes=4))
    assert not _signed_in(client)
    assert [e.reason for e in session_ended] == ["expired"]


def test_every_page_offers_sign_out_while_signed_in(client: FlaskClient) -> None:
    def header(path: str) -> str:
        page = client.get(path).get_data(as_text=True)
        return page.split('<header class="header">', 1)[1].split("</header>", 1)[0]

    assert 'id="header-signout"' not in header("/login")
    password_login(client, "alex.morgan@nhs.net")
    for path in ("/login", "/signout", "/register", "/no-such-page", "/card/agent-help"):
        assert 'id="header-signout"' in header(path), path
        assert "alex.morgan@nhs.net" in header(path), path
