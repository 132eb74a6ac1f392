"""The acceptable use policy at password sign-in: one message for each deployment.

A writable directory: the refusal page offers the policy to accept, for the account whose
password was just checked in this browser only, and then the sign-in goes on. A read-only
one: the page says to accept it in the NHSmail portal, and offers nothing to accept here.
"""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from broker_support import (
    DEMO_RP_CALLBACK,
    AppFactory,
    broker_of,
    browser_csrf,
    cookie_value,
    csrf_token_from,
    error_code_of,
    form_of,
    login_form,
    password_login,
    rp_transaction,
    started_in,
)
from flask import Flask
from flask.testing import FlaskClient
from ldap3 import MODIFY_REPLACE
from oidc_support import query_of
from sqlalchemy import select
from werkzeug.test import TestResponse

from careid_broker.codes import AupRoute, BrokerCode, aup_message
from careid_broker.signin.aup import AUP_CLIENT_ID
from careid_broker.store import AuditRecord, AuthorizationRequest, Outcome
from careid_broker.store.models import LoginTransaction
from careid_broker.web.errors import error_response
from careid_devkit.slapd import Slapd
from support.clock import FakeClock
from support.directory_entries import modify_entry
from support.directory_writes import stop_once_written

SAM = "sam.patel@nhs.net"  # never accepted
CHRIS = "chris.old@nhs.net"  # accepted an older version
SIGNIN_COOKIE = "careid-signin"
PORTAL = "in the NHSmail portal"


def _last(app: Flask, event: str) -> AuditRecord:
    entries = [
        e for e in broker_of(app).repos.audit.list_recent(event_prefix=event) if e.event == event
    ]
    assert entries, f"no {event} audit entry"
    return entries[0]


def _text(response: object) -> str:
    return html.unescape(response.get_data(as_text=True))  # type: ignore[attr-defined]


@pytest.fixture
def writable_app(app_factory: AppFactory) -> Flask:
    return app_factory(directory={"writable": True})


def _rp_transaction(app: Flask, client: FlaskClient) -> str:
    created = broker_of(app).repos.transactions.create(
        AuthorizationRequest(client_id="testrp", redirect_uri="https://rp/cb", scope="openid")
    )
    return started_in(client, created.transaction_id)


@pytest.mark.parametrize("mail", [SAM, CHRIS])
def test_read_only_says_accept_it_in_the_portal_and_offers_nothing_here(
    app: Flask, client: FlaskClient, mail: str
) -> None:
    response = password_login(client, mail)
    assert response.status_code == 403
    assert error_code_of(response) == "aup_not_accepted"
    page = _text(response)
    assert aup_message(AupRoute.PORTAL) in page
    assert PORTAL in page and 'href="https://portal.nhs.net/"' in page
    assert 'id="aup-form"' not in page and "I accept" not in page
    assert 'href="/login/aup' not in page
    entry = _last(app, "signin.password")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "aup_not_accepted"
    # Nothing to accept here, whatever is posted.
    assert "I accept" not in _text(client.get("/login/aup"))
    token = csrf_token_from(client.get("/login").get_data(as_text=True))
    refused = client.post("/login/aup", data={"csrf_token": token, "accept": "yes"})
    assert error_code_of(refused) == "oidc_signin_expired"
    account = broker_of(app).directory.find_account(mail)
    assert account is not None and account.aup_version != "2024-1"


@pytest.mark.parametrize("mail", [SAM, CHRIS])
def test_writable_offers_the_policy_here_without_sending_anyone_to_the_portal(
    writable_app: Flask, mail: str
) -> None:
    client = writable_app.test_client()
    response = password_login(client, mail)
    assert response.status_code == 403
    assert error_code_of(response) == "aup_not_accepted"
    page = _text(response)
    assert aup_message(AupRoute.HERE) in page
    assert 'id="aup-form"' in page and 'id="aup-accept-button"' in page
    assert 'href="https://portal.nhs.net/" id="aup-read-link"' in page
    assert PORTAL not in page and "NHSmail itself" not in page
    assert mail in page and "(version 2024-1)" in page
    entry = _last(writable_app, "signin.password")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "aup_not_accepted"
    assert entry.actor == mail
    assert cookie_value(client, SIGNIN_COOKIE) is None  # not signed in until accepted


def test_accepting_records_it_for_that_account_and_continues_to_the_relying_party(
    writable_app: Flask,
) -> None:
    client = writable_app.test_client()
    tx = _rp_transaction(writable_app, client)
    page = _text(password_login(client, SAM, tx=tx))
    accepted = client.post("/login/aup", data=form_of(page, accept="yes"))
    assert accepted.status_code == 303
    assert accepted.location == f"/authorize/resume?tx={tx}"
    broker = broker_of(writable_app)
    account = broker.directory.find_account(SAM)
    assert account is not None and account.aup_version == "2024-1"
    other = broker.directory.find_account(CHRIS)
    assert other is not None and other.aup_version != "2024-1"
    entry = _last(writable_app, "aup.accept")
    assert entry.outcome is Outcome.SUCCESS and entry.actor == SAM and entry.subject == SAM
    assert entry.relying_party == "testrp" and entry.details["aup_version"] == "2024-1"
    assert len(broker.repos.sessions.active_for_account(SAM)) == 1
    assert _last(writable_app, "signin.password").outcome is Outcome.SUCCESS
    # Single use: the same step accepts nothing twice.
    again = client.post(
        "/login/aup",
        data={"csrf_token": csrf_token_from(_text(client.get("/signout"))), "accept": "yes"},
    )
    assert error_code_of(again) == "oidc_signin_expired"


def test_accepting_needs_the_form_token(writable_app: Flask) -> None:
    client = writable_app.test_client()
    password_login(client, SAM)
    forged = client.post("/login/aup", data={"accept": "yes"})
    assert forged.status_code == 400 and error_code_of(forged) == "csrf_invalid"
    forged = client.post("/login/aup", data={"accept": "yes", "csrf_token": "guess"})
    assert error_code_of(forged) == "csrf_invalid"
    account = broker_of(writable_app).directory.find_account(SAM)
    assert account is not None and account.aup_version is None
    assert _last(writable_app, "csrf.refused").details["endpoint"] == "aup.accept"


def test_only_the_browser_that_checked_the_password_can_accept(writable_app: Flask) -> None:
    sams_browser = writable_app.test_client()
    password_login(sams_browser, SAM)
    # Someone else, who knows only the address, has no step to accept with.
    stranger = writable_app.test_client()
    page = _text(stranger.get("/login/aup"))
    assert 'id="aup-password-form"' in page and 'id="aup-form"' not in page
    refused = stranger.post(
        "/login/aup",
        data={"csrf_token": csrf_token_from(page), "accept": "yes", "email": SAM},
    )
    assert error_code_of(refused) == "oidc_signin_expired"
    assert _last(writable_app, "aup.accept").outcome is Outcome.FAILURE
    # A wrong password starts nothing either.
    wrong = stranger.post(
        "/login/aup/password",
        data={"csrf_token": csrf_token_from(page), "email": SAM, "password": "not-it"},
    )
    assert wrong.status_code == 400 and error_code_of(wrong) == "invalid_credentials"
    assert 'id="aup-form"' not in _text(wrong)
    account = broker_of(writable_app).directory.find_account(SAM)
    assert account is not None and account.aup_version is None


def test_a_step_left_open_on_a_shared_workstation_ends_with_a_sign_out_or_sign_in(
    writable_app: Flask,
) -> None:
    workstation = writable_app.test_client()

    def sams_step_is_open() -> bool:
        return 'id="aup-form"' in _text(workstation.get("/login/aup"))

    # Sam's password is checked, the policy is offered; Sam walks away, signing out.
    password_login(workstation, SAM)
    assert sams_step_is_open()
    page = _text(workstation.get("/login"))
    assert (
        workstation.post("/signout", data={"csrf_token": csrf_token_from(page)}).status_code == 200
    )
    assert not sams_step_is_open()
    # Again, and this time the next person signs in on the same browser.
    password_login(workstation, SAM)
    assert sams_step_is_open()
    assert password_login(workstation, "alex.morgan@nhs.net").status_code == 303
    page = _text(workstation.get("/login/aup"))
    assert 'id="aup-form"' not in page
    refused = workstation.post("/login/aup", data=form_of(page, accept="yes"))
    assert error_code_of(refused) == "oidc_signin_expired"
    account = broker_of(writable_app).directory.find_account(SAM)
    assert account is not None and account.aup_version is None


def test_a_card_user_accepts_with_the_password_and_goes_back_to_the_card(
    writable_app: Flask,
) -> None:
    client = writable_app.test_client()
    form = _text(client.get("/login/aup"))
    assert aup_message(AupRoute.PASSWORD) in form and PORTAL not in form
    checked = client.post(
        "/login/aup/password",
        data={"csrf_token": csrf_token_from(form), "email": CHRIS, "password": "Demo-Password-1"},
    )
    assert checked.status_code == 403 and error_code_of(checked) == "aup_not_accepted"
    page = _text(checked)
    assert 'id="aup-form"' in page and PORTAL not in page
    assert _last(writable_app, "aup.password").outcome is Outcome.SUCCESS
    done = client.post("/login/aup", data=form_of(page, accept="yes"))
    assert done.status_code == 200
    assert "Sign in with your smartcard" in _text(done)
    account = broker_of(writable_app).directory.find_account(CHRIS)
    assert account is not None and account.aup_version == "2024-1"
    assert _last(writable_app, "aup.accept").actor == CHRIS
    # The detour signs nobody in: the card does that next.
    assert broker_of(writable_app).repos.sessions.active_for_account(CHRIS) == []


def test_a_directory_refusal_after_sign_in_names_the_way_to_accept(
    writable_app: Flask, app: Flask
) -> None:
    with writable_app.test_request_context("/", headers={"Accept": "text/html"}):
        page = html.unescape(error_response(BrokerCode.AUP_NOT_ACCEPTED).get_data(as_text=True))
    assert aup_message(AupRoute.PASSWORD) in page and 'href="/login/aup"' in page
    assert PORTAL not in page
    with app.test_request_context("/", headers={"Accept": "text/html"}):
        page = html.unescape(error_response(BrokerCode.AUP_NOT_ACCEPTED).get_data(as_text=True))
    assert aup_message(AupRoute.PORTAL) in page and 'href="/login/aup"' not in page


def test_accepting_on_a_page_for_another_persons_step_records_nothing(
    writable_app: Flask,
) -> None:
    # One browser, two tabs at a shared workstation: Sam's password is checked and the
    # policy offered for Sam; then Chris signs in in another tab and walks off at his.
    client = writable_app.test_client()
    sams_page = _text(password_login(client, SAM))
    assert SAM in sams_page and 'id="aup-form"' in sams_page
    assert password_login(client, CHRIS).status_code == 403
    # Chris's password spent the token Sam's page holds: its button is refused for that.
    spent = client.post("/login/aup", data=form_of(sams_page, accept="yes"))
    assert spent.status_code == 400 and error_code_of(spent) == "csrf_invalid"
    # It also acts on Sam's step, which Chris's replaced: refused for that too, even were
    # its token current. Nothing is recorded for either, nobody is signed in, and the
    # refusal is audited.
    current = {**form_of(sams_page, accept="yes"), "csrf_token": browser_csrf(client)}
    refused = client.post("/login/aup", data=current)
    assert refused.status_code == 409 and error_code_of(refused) == "step_superseded"
    directory = broker_of(writable_app).directory
    for mail in (SAM, CHRIS):
        account = directory.find_account(mail)
        assert account is not None and account.aup_version != "2024-1"
        assert broker_of(writable_app).repos.sessions.active_for_account(mail) == []
    entry = _last(writable_app, "aup.accept")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "step_superseded"
    assert entry.subject == CHRIS
    # Chris's own page still works for Chris.
    chris_page = _text(client.get("/login/aup"))
    assert CHRIS in chris_page
    accepted = client.post("/login/aup", data=form_of(chris_page, accept="yes"))
    assert accepted.status_code == 303
    account = directory.find_account(CHRIS)
    assert account is not None and account.aup_version == "2024-1"


# When the session begins: the password's check, not the click on the policy page.


def test_the_session_dates_from_the_password_check_not_the_acceptance(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    app = app_factory(directory={"writable": True}, broker={"session_lifetime_seconds": 3600})
    client = app.test_client()
    page = _text(password_login(client, SAM))
    checked = clock()
    clock.advance(timedelta(minutes=9))  # the page left open: no credential after this
    assert client.post("/login/aup", data=form_of(page, accept="yes")).status_code == 303
    broker = broker_of(app)
    [signin] = broker.repos.sessions.active_for_account(SAM)
    assert signin.auth_time == checked and signin.created_at == clock()
    assert signin.amr == ("pwd",)
    # Its lifetime runs from the password too: the click does not lengthen it.
    clock.advance(timedelta(minutes=51) - timedelta(seconds=1))
    assert broker.sessions.find(signin.sid) is not None
    clock.advance(timedelta(seconds=1))
    assert broker.sessions.find(signin.sid) is None


def test_max_age_counts_from_the_password_check_not_the_acceptance(
    writable_app: Flask, clock: FakeClock
) -> None:
    client = writable_app.test_client()
    tx = rp_transaction(writable_app, client, max_age=300)
    page = _text(password_login(client, SAM, tx=tx))
    clock.advance(timedelta(minutes=9))
    accepted = client.post("/login/aup", data=form_of(page, accept="yes"))
    assert accepted.location == f"/authorize/resume?tx={tx}"
    # The password is nine minutes old: the relying party asked for five at most.
    resumed = client.get(accepted.location)
    assert resumed.status_code == 302 and resumed.location.startswith("/login?"), resumed.location
    assert query_of(resumed.location)["tx"] == tx
    # Signing in again (the policy is accepted now) goes on to the code.
    again = password_login(client, SAM, tx=tx)
    assert again.status_code == 303 and again.location.startswith(DEMO_RP_CALLBACK)


def test_prompt_login_is_not_met_by_accepting_a_policy_offered_before_the_request(
    writable_app: Flask, clock: FakeClock
) -> None:
    client = writable_app.test_client()
    page = _text(password_login(client, SAM))  # the password checked, the policy offered
    clock.advance(timedelta(minutes=5))
    tx = rp_transaction(writable_app, client, prompt="login")  # the RP asks for a new login
    clock.advance(timedelta(minutes=4))
    # A click, no credential: the sign-in it makes is older than the request.
    assert client.post("/login/aup", data=form_of(page, accept="yes")).status_code == 303
    resumed = client.get(f"/authorize/resume?tx={tx}")
    assert resumed.status_code == 302 and resumed.location.startswith("/login?"), resumed.location


def test_a_step_stored_without_its_check_time_dates_from_when_it_was_stored(
    writable_app: Flask, clock: FakeClock
) -> None:
    client = writable_app.test_client()
    page = _text(password_login(client, SAM))
    stored = clock()
    # As a broker before this one stored it (a rolling upgrade): no check time.
    with broker_of(writable_app).store.transaction() as session:
        for row in session.scalars(
            select(LoginTransaction).where(LoginTransaction.client_id == AUP_CLIENT_ID)
        ):
            assert "checked_at" in row.extras
            row.extras = {k: v for k, v in row.extras.items() if k != "checked_at"}
    clock.advance(timedelta(minutes=9))
    assert client.post("/login/aup", data=form_of(page, accept="yes")).status_code == 303
    [signin] = broker_of(writable_app).repos.sessions.active_for_account(SAM)
    assert signin.auth_time == stored


def test_accepting_on_a_page_that_names_no_step_shows_the_policy_again(
    writable_app: Flask,
) -> None:
    # A policy page shown before pages named their step (open across an upgrade).
    client = writable_app.test_client()
    page = _text(password_login(client, SAM))
    old_form = {k: v for k, v in form_of(page, accept="yes").items() if k != "step"}
    refused = client.post("/login/aup", data=old_form)
    assert error_code_of(refused) == "oidc_signin_expired"
    account = broker_of(writable_app).directory.find_account(SAM)
    assert account is not None and account.aup_version is None
    assert _last(writable_app, "aup.accept").error_code == "oidc_signin_expired"
    # The step is kept: the policy page offers it again, for Sam.
    again = _text(client.get("/login/aup"))
    assert 'id="aup-form"' in again and SAM in again


# The directory records the acceptance, then cannot be read back.


def test_an_acceptance_the_directory_recorded_is_audited_even_if_it_cannot_be_read_back(
    app_factory: AppFactory, own_slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory(
        directory_slapd=own_slapd,
        directory={
            "writable": True,
            "write_bind_dn": own_slapd.aup_writer_bind_dn,
            "write_bind_password": own_slapd.aup_writer_password,
        },
    )
    client = app.test_client()
    page = _text(password_login(client, SAM))
    broker = broker_of(app)
    stop_once_written(broker.directory, own_slapd, monkeypatch)
    stopped = client.post("/login/aup", data=form_of(page, accept="yes"))
    # This sign-in stops: the account it would sign in could not be read.
    assert stopped.status_code == 503 and error_code_of(stopped) == "directory_unavailable"
    assert cookie_value(client, SIGNIN_COOKIE) is None
    assert broker.repos.sessions.active_for_account(SAM) == []
    # The acceptance is in the directory, so the audit says it was made, and why this
    # sign-in went no further.
    entries = [e for e in broker.repos.audit.list_recent(event_prefix="aup.accept")]
    made = [e for e in entries if e.outcome is Outcome.SUCCESS]
    stopped_there = [e for e in entries if e.outcome is Outcome.FAILURE]
    assert len(made) == 1 and len(stopped_there) == 1
    assert made[0].actor == SAM and made[0].subject == SAM
    assert made[0].details["aup_version"] == "2024-1"
    assert stopped_there[0].error_code == "directory_unavailable"
    assert stopped_there[0].details["aup_recorded"] == "2024-1"
    own_slapd.start()
    account = broker.directory.find_account(SAM)
    assert account is not None and account.aup_version == "2024-1"
    # Signing in again goes straight through: the policy is not offered a second time.
    again = password_login(app.test_client(), SAM)
    assert again.status_code == 303, error_code_of(again)


def _aup_writer(slapd: Slapd) -> dict[str, object]:
    """`[directory]` overrides: the broker records AUP acceptance in this slapd."""
    return {
        "writable": True,
        "write_bind_dn": slapd.aup_writer_bind_dn,
        "write_bind_password": slapd.aup_writer_password,
    }


def _spent_form_refused(app: Flask, replay: TestResponse, endpoint: str) -> str:
    """A form sent again after its first answer: refused as spent, and audited; the page."""
    assert replay.status_code == 400 and error_code_of(replay) == "csrf_invalid"
    entry = _last(app, "csrf.refused")
    assert entry.error_code == "csrf_invalid" and entry.details["endpoint"] == endpoint
    page = _text(replay)
    assert "Demo-Password-1" not in page
    return page


def test_a_sign_in_refused_for_the_policy_cannot_be_sent_again_once_it_is_accepted(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    # Read-only: Sam is told to accept the policy in the portal, does so, and walks away.
    # The next person's Back or Reload sends Sam's sign-in form again.
    app = app_factory(directory_slapd=own_slapd)
    workstation = app.test_client()
    form = {"csrf_token": login_form(workstation), "email": SAM, "password": "Demo-Password-1"}
    refused = workstation.post("/login", data=form)
    assert refused.status_code == 403 and error_code_of(refused) == "aup_not_accepted"
    modify_entry(
        own_slapd,
        "uid=sam.patel,ou=people,dc=nhs,dc=example",
        {"careidAupAcceptedVersion": [(MODIFY_REPLACE, ["2024-1"])]},
    )

    page = _spent_form_refused(app, workstation.post("/login", data=form), "login.submit")
    assert f'value="{SAM}"' in page
    assert broker_of(app).repos.sessions.active_for_account(SAM) == []
    assert cookie_value(workstation, SIGNIN_COOKIE) is None


def test_a_sign_in_that_offered_the_policy_cannot_be_sent_again_for_a_new_step(
    writable_app: Flask, clock: FakeClock
) -> None:
    # Sam is offered the policy, leaves it, and the step runs out. Sending Sam's form
    # again would check the password afresh and offer the next person Sam's policy to
    # accept, and with it Sam's sign-in.
    workstation = writable_app.test_client()
    form = {"csrf_token": login_form(workstation), "email": SAM, "password": "Demo-Password-1"}
    offered = workstation.post("/login", data=form)
    assert offered.status_code == 403 and 'id="aup-form"' in _text(offered)
    clock.advance(timedelta(minutes=11))
    assert 'id="aup-form"' not in _text(workstation.get("/login/aup"))

    _spent_form_refused(writable_app, workstation.post("/login", data=form), "login.submit")
    assert 'id="aup-form"' not in _text(workstation.get("/login/aup"))
    account = broker_of(writable_app).directory.find_account(SAM)
    assert account is not None and account.aup_version is None
    assert broker_of(writable_app).repos.sessions.active_for_account(SAM) == []


def test_the_policys_password_form_refused_while_the_directory_was_down_cannot_be_sent_again(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    # Chris checks the password to accept the policy while the directory hangs and walks
    # away. Sent again by the next person, it would offer them Chris's policy to accept.
    app = app_factory(directory_slapd=own_slapd, directory=_aup_writer(own_slapd))
    workstation = app.test_client()
    form = {
        "csrf_token": csrf_token_from(_text(workstation.get("/login/aup"))),
        "email": CHRIS,
        "password": "Demo-Password-1",
    }
    with own_slapd.paused():
        down = workstation.post("/login/aup/password", data=form)
    assert down.status_code == 503 and error_code_of(down) == "directory_unavailable"

    replay = workstation.post("/login/aup/password", data=form)
    page = _spent_form_refused(app, replay, "aup.check_password")
    assert 'id="aup-password-form"' in page and f'value="{CHRIS}"' in page
    assert 'id="aup-form"' not in page
    assert 'id="aup-form"' not in _text(workstation.get("/login/aup"))
    account = broker_of(app).directory.find_account(CHRIS)
    assert account is not None and account.aup_version != "2024-1"
