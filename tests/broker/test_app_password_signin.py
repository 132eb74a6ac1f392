"""Password sign-in against the real demo directory: every seeded account state."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from broker_support import (
    DEMO_PASSWORD,
    DEMO_RP,
    DEMO_RP_CALLBACK,
    AppFactory,
    broker_of,
    cookie_value,
    error_code_of,
    login_form,
    password_login,
    rp_transaction,
    started_in,
)
from flask import Flask
from flask.testing import FlaskClient
from ldap3 import MODIFY_REPLACE
from metrics_support import samples

from careid_broker.assurance import ACR_PASSWORD, AMR_PASSWORD
from careid_broker.codes import BrokerCode, message_for
from careid_broker.store import AuditRecord, AuthorizationRequest, EndedSession, Outcome
from careid_broker.store.errors import StoreUnavailableError
from careid_broker.web import oidc_authorize as authorize_flow
from careid_devkit.slapd import Slapd
from support.directory_entries import modify_entry

SIGNIN_COOKIE = "careid-signin"
BROWSER_COOKIE = "careid-browser"


def _last_audit(app: Flask, event: str = "signin.password") -> AuditRecord:
    entries = broker_of(app).repos.audit.list_recent(event_prefix=event, limit=1)
    assert entries, f"no {event} audit entry"
    return entries[0]


def test_alex_signs_in_and_gets_a_password_session(app: Flask, client: FlaskClient) -> None:
    response = password_login(client, "alex.morgan@nhs.net")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    sessions = broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net")
    assert len(sessions) == 1
    session = sessions[0]
    assert session.acr == ACR_PASSWORD and session.amr == AMR_PASSWORD
    assert session.card_uuid is None
    # The cookie names the session, signed: never the bare sid RPs see in their tokens.
    cookie = cookie_value(client, SIGNIN_COOKIE)
    assert cookie is not None and session.sid not in cookie

    page = client.get("/login")
    assert "You are signed in" in page.get_data(as_text=True)
    assert "alex.morgan@nhs.net" in page.get_data(as_text=True)

    entry = _last_audit(app)
    assert entry.outcome is Outcome.SUCCESS
    assert entry.actor == entry.subject == "alex.morgan@nhs.net"
    assert entry.organisation == "RX1"
    assert entry.client_address == "127.0.0.1"
    assert entry.details["sid"] == session.sid


def test_the_cookies_are_httponly_and_samesite_lax(client: FlaskClient) -> None:
    response = password_login(client, "alex.morgan@nhs.net")
    set_cookies = response.headers.getlist("Set-Cookie")
    signin = next(c for c in set_cookies if c.startswith(f"{SIGNIN_COOKIE}="))
    browser = next(c for c in set_cookies if c.startswith(f"{BROWSER_COOKIE}="))
    for header in (signin, browser):
        assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
        assert "Secure" not in header  # development mode


def test_outside_development_cookies_are_secure_and_host_prefixed(
    app_factory: AppFactory,
) -> None:
    app = app_factory(
        broker={"dev": False, "dev_disable_workers": False, "issuer": "https://sso.example.test"}
    )
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    response = password_login(client, "alex.morgan@nhs.net")
    assert response.status_code == 303, response.get_data(as_text=True)
    set_cookies = response.headers.getlist("Set-Cookie")
    signin = next(c for c in set_cookies if c.startswith(f"__Host-{SIGNIN_COOKIE}="))
    browser = next(c for c in set_cookies if c.startswith(f"__Host-{BROWSER_COOKIE}="))
    for header in (signin, browser):
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header
        assert "Domain" not in header


def test_each_sign_in_rotates_the_session_and_ends_the_one_before(
    app: Flask, client: FlaskClient, session_ended: list[EndedSession]
) -> None:
    password_login(client, "alex.morgan@nhs.net")
    first_cookie = cookie_value(client, SIGNIN_COOKIE)
    first_browser = cookie_value(client, BROWSER_COOKIE)
    first = broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net")[0]

    # Someone else signs in at the same (shared) browser, for an RP's new request.
    response = password_login(client, "lee.admin@nhs.net", tx=rp_transaction(app, client))
    assert response.status_code == 303
    assert cookie_value(client, SIGNIN_COOKIE) not in (None, first_cookie)
    assert cookie_value(client, BROWSER_COOKIE) != first_browser  # CSRF token replaced
    ended = broker_of(app).repos.sessions.get(first.sid)
    assert ended is not None and not ended.active and ended.end_reason == "logout"
    assert [e.sid for e in session_ended] == [first.sid]
    assert broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net") == []
    assert len(broker_of(app).repos.sessions.active_for_account("lee.admin@nhs.net")) == 1
    assert "lee.admin@nhs.net" in client.get("/login").get_data(as_text=True)


def test_a_cookie_from_before_sign_in_is_worthless_afterwards(
    app: Flask, client: FlaskClient
) -> None:
    planted = client.application.test_client()
    password_login(planted, "kim.taylor@nhs.net")
    fixated = cookie_value(planted, SIGNIN_COOKIE)
    assert fixated is not None
    client.set_cookie(SIGNIN_COOKIE, fixated)
    password_login(client, "alex.morgan@nhs.net", tx=rp_transaction(app, client))
    assert cookie_value(client, SIGNIN_COOKIE) != fixated
    # The planted session was ended, so the attacker's copy signs nobody in.
    assert "Sign in" in planted.get("/login").get_data(as_text=True)
    assert "You are signed in" not in planted.get("/login").get_data(as_text=True)


def test_a_forged_cookie_is_ignored(app: Flask, client: FlaskClient) -> None:
    password_login(client, "alex.morgan@nhs.net")
    sid = broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net")[0].sid
    other = app.test_client()
    other.set_cookie(SIGNIN_COOKIE, sid)  # the bare sid, as an RP would know it
    assert "You are signed in" not in other.get("/login").get_data(as_text=True)


@pytest.mark.parametrize(
    ("mail", "code", "advice"),
    [
        ("sam.patel@nhs.net", "aup_not_accepted", "Read and accept the acceptable use policy"),
        ("chris.old@nhs.net", "aup_not_accepted", "Read and accept the acceptable use policy"),
        ("jo.bloggs@nhs.net", "account_disabled", "contact your local administrator"),
    ],
)
def test_directory_states_refuse_with_a_page_saying_what_to_do(
    app: Flask, client: FlaskClient, mail: str, code: str, advice: str
) -> None:
    response = password_login(client, mail)
    assert response.status_code == 403
    assert error_code_of(response) == code
    page = response.get_data(as_text=True)
    assert advice in page
    assert message_for(BrokerCode(code)).split(".")[0] in page.replace("&#39;", "'")
    if code == "aup_not_accepted":
        assert 'href="https://portal.nhs.net/"' in page
    assert cookie_value(client, SIGNIN_COOKIE) is None
    assert broker_of(app).repos.sessions.active_for_account(mail) == []
    entry = _last_audit(app)
    assert entry.outcome is Outcome.FAILURE and entry.error_code == code
    assert entry.actor == mail and entry.organisation == "RX1"


def test_an_expiry_no_calendar_holds_refuses_the_account_not_the_service(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    # OpenLDAP takes 00010101000000+0100; in UTC it is in year 0, which no datetime holds.
    modify_entry(
        own_slapd,
        "uid=alex.morgan,ou=people,dc=nhs,dc=example",
        {"careidAccountExpires": [(MODIFY_REPLACE, ["00010101000000+0100"])]},
    )
    app = app_factory(directory_slapd=own_slapd)
    response = password_login(app.test_client(), "alex.morgan@nhs.net")
    assert response.status_code == 403
    assert error_code_of(response) == "directory_data_invalid"
    entry = _last_audit(app)
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "directory_data_invalid"


@pytest.mark.parametrize("mail", ["pat.jones@nhs.net", "kim.taylor@nhs.net", "lee.admin@nhs.net"])
def test_other_active_accounts_sign_in(app: Flask, client: FlaskClient, mail: str) -> None:
    # pat's Care Identity is inactive: that matters to card sign-in only.
    response = password_login(client, mail)
    assert response.status_code == 303
    assert len(broker_of(app).repos.sessions.active_for_account(mail)) == 1


def test_wrong_password_and_unknown_user_get_the_same_answer(
    app: Flask, client: FlaskClient
) -> None:
    wrong = password_login(client, "kim.taylor@nhs.net", "not-the-password")
    unknown = password_login(client, "nobody.here@nhs.net", DEMO_PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 400
        assert error_code_of(response) == "invalid_credentials"
    message = message_for(BrokerCode.INVALID_CREDENTIALS)
    pages = [r.get_data(as_text=True) for r in (wrong, unknown)]
    assert all(message in page for page in pages)
    # Apart from the typed address and the per-request tokens, the pages are identical.
    normalised = [
        _strip_variable(page, mail)
        for page, mail in zip(pages, ("kim.taylor@nhs.net", "nobody.here@nhs.net"), strict=True)
    ]
    assert normalised[0] == normalised[1]
    assert 'href="#email"' in pages[0]  # the error summary links to the field
    assert "not-the-password" not in pages[0]  # never echoed back
    codes = [e.error_code for e in broker_of(app).repos.audit.list_recent(limit=2)]
    assert codes == ["invalid_credentials", "invalid_credentials"]


def _strip_variable(page: str, mail: str) -> str:
    page = page.replace(mail, "MAIL")
    return re.sub(r'name="csrf_token" value="[^"]+"', "", page)


def test_missing_fields_are_named_in_an_error_summary_linked_to_them(
    app: Flask, client: FlaskClient
) -> None:
    response = password_login(client, "", "")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'class="error-summary"' in page and 'role="alert"' in page
    assert '<a href="#email">Enter your email address</a>' in page
    assert '<a href="#password">Enter your password</a>' in page
    assert 'aria-describedby="email-error"' in page and 'aria-invalid="true"' in page
    assert "<title>Error: Sign in" in page
    entry = _last_audit(app)
    assert entry.error_code == "signin_form_incomplete" and entry.actor is None


def test_something_typed_into_the_email_field_that_is_not_an_address_is_not_audited(
    app: Flask, client: FlaskClient
) -> None:
    password_login(client, "Secret-Typed-Here", DEMO_PASSWORD)
    entry = _last_audit(app)
    assert entry.error_code == "invalid_credentials"
    assert entry.actor is None and entry.subject is None


def test_with_a_login_transaction_the_answer_goes_on_to_the_rp_with_its_code(
    app: Flask, client: FlaskClient
) -> None:
    tx = rp_transaction(app, client)
    response = password_login(client, "alex.morgan@nhs.net", tx=tx)
    # 303, not 302 or 307: the browser must not post the form (its password) onward.
    assert response.status_code == 303
    answer = urlsplit(response.headers["Location"])
    assert f"{answer.scheme}://{answer.netloc}{answer.path}" == DEMO_RP_CALLBACK
    params = parse_qs(answer.query)
    assert params["state"] == ["rp-state"] and params["code"][0]
    entry = _last_audit(app)
    assert entry.relying_party == DEMO_RP and entry.outcome is Outcome.SUCCESS
    issued = _last_audit(app, "oidc.authorize")
    assert issued.relying_party == DEMO_RP and issued.outcome is Outcome.SUCCESS
    # The code completed the transaction: the form cannot be posted for it again.
    record = broker_of(app).repos.transactions.get(tx)
    assert record is not None and record.status.value == "completed"


def test_a_transaction_completed_meanwhile_keeps_neither_the_session_nor_a_code(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session and the code are one write: the same form posted twice (another tab,
    a double click) gives one sign-in, and the loser no session of its own."""
    tx = rp_transaction(app, client)
    read_claims = authorize_flow.care_identity_of

    def other_request_completes_it(provider: Any, account: Any) -> Any:
        # Between this request's reads and its write, another one issues the code.
        broker_of(app).repos.transactions.complete(tx)
        return read_claims(provider, account)

    monkeypatch.setattr(authorize_flow, "care_identity_of", other_request_completes_it)
    response = password_login(client, "alex.morgan@nhs.net", tx=tx)
    assert response.status_code == 400 and error_code_of(response) == "oidc_signin_expired"
    assert broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net") == []
    audit = broker_of(app).repos.audit
    [refused] = audit.list_recent(event_prefix="oidc.authorize", limit=5)
    assert refused.outcome is Outcome.FAILURE and refused.error_code == "oidc_signin_expired"
    assert refused.relying_party == DEMO_RP
    assert all(
        entry.outcome is not Outcome.SUCCESS
        for entry in audit.list_recent(event_prefix="signin.password", limit=5)
    )
    exposition = client.get("/metrics").get_data(as_text=True)
    found = samples(exposition)
    succeeded = ("careid_signins_total", frozenset({("method", "password"), ("result", "success")}))
    assert found.get(succeeded, 0) == 0  # counted only once committed


@pytest.mark.parametrize("failure", ["completed_meanwhile", "store_unavailable"])
def test_a_sign_in_rolled_back_leaves_the_browser_with_the_person_before(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """At a shared workstation: Alex is signed in, Kim signs in for an RP and the write
    that would start Kim's session (ending Alex's) rolls back. The browser must still
    hold Alex's session, which is still live, so that it can be signed out from here."""
    assert password_login(client, "alex.morgan@nhs.net").status_code == 303
    alex_cookie = cookie_value(client, SIGNIN_COOKIE)
    tx = rp_transaction(app, client)
    if failure == "completed_meanwhile":
        read_claims = authorize_flow.care_identity_of

        def other_request_completes_it(provider: Any, account: Any) -> Any:
            broker_of(app).repos.transactions.complete(tx)
            return read_claims(provider, account)

        monkeypatch.setattr(authorize_flow, "care_identity_of", other_request_completes_it)
        expected = (400, "oidc_signin_expired")
    else:

        def store_gone(*_args: Any, **_kwargs: Any) -> Any:
            raise StoreUnavailableError(detail="the database went away")

        monkeypatch.setattr(broker_of(app).oidc.server, "create_authorization_response", store_gone)
        expected = (503, "store_unavailable")
    response = password_login(client, "kim.taylor@nhs.net", tx=tx)
    assert (response.status_code, error_code_of(response)) == expected
    assert not any(SIGNIN_COOKIE in c for c in response.headers.getlist("Set-Cookie"))
    assert cookie_value(client, SIGNIN_COOKIE) == alex_cookie
    sessions = broker_of(app).repos.sessions
    assert sessions.active_for_account("kim.taylor@nhs.net") == []
    [alex] = sessions.active_for_account("alex.morgan@nhs.net")
    # Still Alex's browser: signing out here ends Alex's session.
    signout = client.get("/signout")
    assert "You are not signed in" not in signout.get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', signout.get_data(as_text=True))
    assert token is not None
    client.post("/signout", data={"csrf_token": token.group(1)})
    assert sessions.active_for_account("alex.morgan@nhs.net") == []


def test_a_request_its_client_no_longer_allows_is_refused_with_the_sign_in_kept(
    app: Flask, client: FlaskClient
) -> None:
    """The RP's registration changed after /authorize (here: the redirect URI is no
    longer registered): the code is refused as `resume` would refuse it, on a page since
    that address cannot be trusted, and the person stays signed in."""
    tx = rp_transaction(app, client, redirect_uri="http://localhost:5001/removed-callback")
    response = password_login(client, "alex.morgan@nhs.net", tx=tx)
    assert response.status_code == 400 and error_code_of(response) == "oidc_request_invalid"
    assert "Location" not in response.headers
    assert len(broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net")) == 1
    refused = _last_audit(app, "oidc.authorize")
    assert refused.outcome is Outcome.FAILURE and refused.error_code == "oidc_request_invalid"
    record = broker_of(app).repos.transactions.get(tx)
    assert record is not None and record.status.value == "pending"


def test_a_request_that_demands_a_card_refuses_the_password(
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
    # The page offers no password form; a hand-made post is still refused.
    card_page = client.get("/login", query_string={"tx": tx.transaction_id})
    assert 'name="password"' not in card_page.get_data(as_text=True)
    response = client.post(
        "/login",
        data={
            "csrf_token": login_form(client),
            "tx": tx.transaction_id,
            "email": "alex.morgan@nhs.net",
            "password": DEMO_PASSWORD,
        },
    )
    assert response.status_code == 403
    assert error_code_of(response) == "card_required"
    assert cookie_value(client, SIGNIN_COOKIE) is None
    assert _last_audit(app).relying_party == "testrp"


def test_the_card_button_leads_to_a_labelled_placeholder(app: Flask, client: FlaskClient) -> None:
    response = client.get("/login/card")
    assert response.status_code == 501
    assert error_code_of(response) == "card_signin_unavailable"
    page = response.get_data(as_text=True)
    assert "placeholder" in page
    assert cookie_value(client, SIGNIN_COOKIE) is None
    entry = _last_audit(app, "signin.card")
    assert entry.outcome is Outcome.FAILURE and entry.error_code == "card_signin_unavailable"


def test_a_sign_in_that_cannot_be_audited_does_not_happen(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The success entry and the session it describes commit together: when the audit
    # write fails (the database went away mid-sign-in) neither is kept, and the person
    # is told the service is unavailable rather than signed in.
    audit_log = broker_of(app).repos.audit
    real_append = audit_log.append

    def failing_append(event: str, *args: object, **kwargs: object) -> AuditRecord:
        if event == "signin.password":
            raise StoreUnavailableError(detail="test: the database went away")
        return real_append(event, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_log, "append", failing_append)
    response = password_login(client, "alex.morgan@nhs.net")
    assert response.status_code == 503 and error_code_of(response) == "store_unavailable"
    assert broker_of(app).repos.sessions.active_for_account("alex.morgan@nhs.net") == []
    monkeypatch.undo()
    entries = broker_of(app).repos.audit.list_recent(event_prefix="signin.password", limit=20)
    assert [e.outcome for e in entries if e.outcome == Outcome.SUCCESS] == []


def test_a_form_refused_while_the_directory_was_down_cannot_be_sent_again(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    # Alex signs in for a relying party while the directory hangs and walks away from the
    # "try again" page. Once it is back, the next person's Back or Reload sends Alex's
    # form again: refused as a spent form, nobody signed in, no code for the RP.
    app = app_factory(directory_slapd=own_slapd)
    workstation = app.test_client()
    tx = rp_transaction(app, workstation)
    mail = "alex.morgan@nhs.net"
    form = {
        "csrf_token": login_form(workstation, tx),
        "tx": tx,
        "email": mail,
        "password": DEMO_PASSWORD,
    }
    with own_slapd.paused():
        down = workstation.post("/login", data=form)
    assert down.status_code == 503 and error_code_of(down) == "directory_unavailable"

    replay = workstation.post("/login", data=form)
    assert replay.status_code == 400 and error_code_of(replay) == "csrf_invalid"
    page = replay.get_data(as_text=True)
    assert f'name="tx" value="{tx}"' in page and DEMO_PASSWORD not in page
    assert broker_of(app).repos.sessions.active_for_account(mail) == []
    record = broker_of(app).repos.transactions.get(tx)
    assert record is not None and record.status.value == "pending"
    refused = _last_audit(app, "csrf.refused")
    assert refused.error_code == "csrf_invalid" and refused.details["endpoint"] == "login.submit"
    assert _last_audit(app).error_code == "directory_unavailable"  # the one attempt
