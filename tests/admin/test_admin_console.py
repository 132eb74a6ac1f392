"""The local administrators' console: who gets in, what they see, scoping, removal."""

from __future__ import annotations

import csv
import dataclasses
import io
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest
from admin_support import (
    ALEX,
    KIM,
    LEE,
    SAM,
    UUIDS,
    confirmation_form,
    make_admin_app,
    page_csrf,
    register,
    sign_in,
)
from broker_support import AppFactory, broker_of, error_code_of
from flask import Flask
from flask.testing import FlaskClient
from oidc_support import Browser, TestRelyingParty
from sqlalchemy import select

from careid_broker.admin.errors import OutOfScopeError
from careid_broker.admin.reasons import Reason, RemovalReason
from careid_broker.admin.removal import remove_registration
from careid_broker.admin.rights import Actor
from careid_broker.admin.service import EXPORT_BATCH
from careid_broker.directory import CareIdentity, Directory, MailAccount
from careid_broker.store import AuditRecord, EndedSession, EndReason
from careid_broker.store.models import SigninSession
from careid_devkit.slapd import Slapd
from support.clock import FakeClock
from support.directory_entries import give_address_to_new_entry


def _audit(app: Flask, event: str) -> list[AuditRecord]:
    return broker_of(app).repos.audit.list_recent(event_prefix=event, limit=100)


# Who may open the console.


def test_a_browser_not_signed_in_is_sent_to_sign_in_with_the_card(admin_app: Flask) -> None:
    response = admin_app.test_client().get("/admin/users/alex.morgan@nhs.net")
    assert response.status_code == 303
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert location.path == "/login"
    query = urllib.parse.parse_qs(location.query)
    assert query["card"] == ["required"]
    assert query["next"] == ["/admin/users/alex.morgan@nhs.net"]


def test_a_password_session_is_asked_to_step_up_to_the_card(admin_app: Flask) -> None:
    browser = admin_app.test_client()
    sign_in(browser, LEE, method="pwd")
    response = browser.get("/admin?q=alex")
    assert response.status_code == 303
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert urllib.parse.parse_qs(location.query) == {
        "card": ["required"],
        "next": ["/admin?q=alex"],
    }
    # The same card holder, signed in with the card, gets in.
    sign_in(browser, LEE)
    assert browser.get("/admin?q=alex").status_code == 200


def test_someone_who_administers_nothing_is_refused_and_audited(admin_app: Flask) -> None:
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    for path in ("/admin", "/admin/users/lee.admin@nhs.net", "/admin/registrations.csv"):
        response = alex.get(path)
        assert response.status_code == 403, path
        assert error_code_of(response) == "admin_not_authorised"
    denied = _audit(admin_app, "admin.denied")
    assert len(denied) == 3 and {e.actor for e in denied} == {ALEX}


def test_rights_are_re_read_after_at_most_five_minutes(
    admin_app: Flask, lee: FlaskClient, clock: FakeClock
) -> None:
    assert lee.get("/admin").status_code == 200
    switch = broker_of(admin_app).directory
    real = switch.real

    class Demoted:
        """The directory after lee's administrator rights were taken away."""

        current_aup_version = real.current_aup_version

        def find_account(self, mail: str) -> MailAccount | None:
            account = real.find_account(mail)
            if account is not None and account.mail == LEE:
                return dataclasses.replace(account, admin_org_codes=())
            return account

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    switch.use(Demoted())
    clock.advance(timedelta(minutes=4, seconds=59))
    assert lee.get("/admin").status_code == 200  # still within the cache
    clock.advance(timedelta(seconds=2))
    assert lee.get("/admin").status_code == 403
    # A new sign-in reads them again at once (no waiting for the cache).
    switch.restore()
    sign_in(lee, LEE)
    assert lee.get("/admin").status_code == 200


class _Changed:
    """The directory after lee's standing changed: the Care Identity of lee's card
    suspended, or lee's account linked to another Care Identity."""

    def __init__(self, real: Directory, change: str) -> None:
        self.real = real
        self.change = change
        self.current_aup_version = real.current_aup_version

    def find_account(self, mail: str) -> MailAccount | None:
        account = self.real.find_account(mail)
        if account is not None and account.mail == LEE and self.change == "relinked":
            return dataclasses.replace(account, care_identity_uuid="555000000077")
        return account

    def find_care_identity(self, uuid: str) -> CareIdentity | None:
        identity = self.real.find_care_identity(uuid)
        if identity is not None and uuid == UUIDS[LEE] and self.change == "suspended":
            return dataclasses.replace(identity, active=False, status="suspended")
        return identity

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


@pytest.mark.parametrize(
    ("change", "code"),
    [("suspended", "care_identity_inactive"), ("relinked", "card_identity_mismatch")],
)
def test_an_administrator_who_may_no_longer_sign_in_loses_the_console(
    admin_app: Flask,
    lee: FlaskClient,
    clock: FakeClock,
    session_ended: list[EndedSession],
    change: str,
    code: str,
) -> None:
    # Rights are re-read with the same standing check a refresh or SSO makes: the
    # session ends as theirs would, and nothing more is done in the console.
    register(admin_app, ALEX)
    _, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    switch = broker_of(admin_app).directory
    switch.use(_Changed(switch.real, change))
    clock.advance(timedelta(minutes=5, seconds=1))  # past the rights cache
    form = {"csrf_token": token, "card_uuid": UUIDS[ALEX], "reason": "lost_card"}
    refused = lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form)
    assert refused.status_code == 403 and error_code_of(refused) == code
    repos = broker_of(admin_app).repos
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    assert repos.sessions.active_for_account(LEE) == []
    assert [(e.account_mail, e.reason) for e in session_ended] == [(LEE, EndReason.ACCOUNT_REFUSED)]
    (denied,) = _audit(admin_app, "admin.denied")
    assert denied.actor == LEE and denied.error_code == code
    (ended,) = _audit(admin_app, "session.end")
    assert ended.details["reason"] == "account_refused" and code in ended.details["why"]
    # The browser is signed out: the console sends it to sign in again.
    assert lee.get("/admin").status_code == 303


def test_the_console_fails_closed_when_the_directory_is_down(
    app_factory: AppFactory, tmp_path: Path, own_slapd: Slapd
) -> None:
    app = make_admin_app(app_factory, tmp_path, directory_slapd=own_slapd)
    browser = app.test_client()
    sign_in(browser, LEE)
    own_slapd.stop()
    response = browser.get("/admin")
    assert response.status_code == 503
    assert error_code_of(response) == "directory_unavailable"


# Finding people, and what the console shows.


@pytest.mark.parametrize("query", ["Alex Morgan", "morgan", "ALEX.MORGAN@nhs.net", UUIDS[ALEX]])
def test_lee_finds_alex_by_name_email_or_uuid(
    admin_app: Flask, lee: FlaskClient, query: str
) -> None:
    register(admin_app, ALEX)
    register(admin_app, KIM)
    page = lee.get("/admin", query_string={"q": query}).get_data(as_text=True)
    assert 'id="admin-results"' in page
    assert f'data-mail="{ALEX}"' in page
    assert KIM not in page and "Kim Taylor" not in page
    assert f'href="/admin/users/{ALEX}"' in page


def test_kim_of_another_organisation_is_never_found(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, KIM)
    for query in ("kim", KIM, UUIDS[KIM], "Taylor"):
        page = lee.get("/admin", query_string={"q": query}).get_data(as_text=True)
        assert 'id="admin-no-results"' in page, query
        assert 'id="admin-results"' not in page and f"/admin/users/{KIM}" not in page
        assert "Kim Taylor" not in page and "Y00001" not in page


def test_the_person_page_shows_account_registration_signins_and_trail(
    admin_app: Flask, lee: FlaskClient
) -> None:
    registration = register(admin_app, ALEX)
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    page = lee.get(f"/admin/users/{ALEX}").get_data(as_text=True)
    assert '<h1 id="admin-user-name">Alex Morgan</h1>' in page
    assert 'id="admin-account-status">Active' in page
    assert "Accepted (version 2024-1" in page
    assert f'id="admin-registration-uuid">{UUIDS[ALEX]}<' in page
    assert registration.cert_serial in page and registration.cert_issuer_dn in page
    assert 'id="remove-registration"' in page
    assert 'id="admin-sessions"' in page  # alex is signed in now
    signins = page.split('id="admin-signins"', 1)[1].split("</table>", 1)[0]
    assert "Smartcard" in signins and "Signed in" in signins
    assert 'id="admin-audit"' in page and 'data-event="signin.card"' in page
    # Accessible structure: every table has column headers, the form fields labels.
    assert page.count('<th scope="col">') >= 13


def test_searches_and_views_of_a_person_are_audited_with_the_administrator(
    admin_app: Flask, lee: FlaskClient
) -> None:
    register(admin_app, ALEX)
    assert lee.get("/admin", query_string={"q": "  Alex Morgan  "}).status_code == 200
    (search,) = _audit(admin_app, "admin.search")
    assert search.actor == LEE and search.outcome.value == "success" and search.subject is None
    assert {k: search.details[k] for k in ("via", "query", "results")} == {
        "via": "console",
        "query": "Alex Morgan",
        "results": 1,
    }
    # Long search text is kept only in part; an empty search is no search.
    assert lee.get("/admin", query_string={"q": "x" * 128}).status_code == 200
    assert lee.get("/admin", query_string={"q": "   "}).status_code == 200
    latest, _ = _audit(admin_app, "admin.search")
    assert latest.details["query"] == "x" * 40 and latest.details["results"] == 0

    for path in (f"/admin/users/{ALEX}", f"/admin/users/{ALEX}/remove"):
        assert lee.get(path).status_code == 200
    views = _audit(admin_app, "admin.user.view")
    assert [(e.actor, e.subject, e.outcome.value) for e in views] == [
        (LEE, ALEX, "success"),
        (LEE, ALEX, "success"),
    ]
    assert views[0].organisation == "RX1" and views[0].details["via"] == "console"
    page = lee.get(f"/admin/users/{ALEX}").get_data(as_text=True)
    assert 'data-event="admin.user.view"' in page and "Person&#39;s page opened" in page


def test_a_person_without_a_registration_has_no_remove_button(
    admin_app: Flask, lee: FlaskClient
) -> None:
    page = lee.get(f"/admin/users/{SAM}").get_data(as_text=True)
    assert 'id="admin-no-registration"' in page and 'id="remove-registration"' not in page
    assert "Not accepted (current version 2024-1)" in page
    assert "aup_not_accepted" in page
    response = lee.get(f"/admin/users/{SAM}/remove")
    assert response.status_code == 303 and response.headers["Location"] == f"/admin/users/{SAM}"


# Scoping: kim.taylor (Y00001) does not exist for lee (RX1).


def test_kim_is_not_found_by_guessed_urls_and_cannot_be_removed(
    admin_app: Flask, lee: FlaskClient
) -> None:
    register(admin_app, KIM)
    register(admin_app, ALEX)
    nobody = lee.get("/admin/users/nobody@nhs.net")
    assert nobody.status_code == 404 and error_code_of(nobody) == "page_not_found"
    for path in (f"/admin/users/{KIM}", f"/admin/users/{KIM}/remove"):
        response = lee.get(path)
        assert response.status_code == 404, path
        assert error_code_of(response) == "page_not_found"
        assert "Kim" not in response.get_data(as_text=True)
    _, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    form = {"csrf_token": token, "reason": "lost_card", "card_uuid": UUIDS[KIM]}
    assert lee.post(f"/admin/users/{KIM}/remove", data=form).status_code == 404
    assert lee.post(f"/admin/users/{KIM}/remove/confirm", data=form).status_code == 404
    # Alex's page with kim's UUID slipped into the confirmation: still nothing removed.
    # Answered as a card no one has registered is ("changed"): a 404 here would tell
    # lee that the UUID is registered in another organisation.
    for uuid in (UUIDS[KIM], "555000000099"):
        slipped = lee.post(
            f"/admin/users/{ALEX}/remove/confirm",
            data={**form, "card_uuid": uuid, "registration": "x"},
        )
        assert slipped.status_code == 303, uuid
        assert slipped.headers["Location"] == f"/admin/users/{ALEX}"
        assert "changed" in lee.get(slipped.headers["Location"]).get_data(as_text=True)
    changed = _audit(admin_app, "admin.registration.remove")[:2]
    assert [e.error_code for e in changed] == ["admin_registration_changed"] * 2
    # Its audit entry names the person whose page it was, never kim.
    assert {e.subject for e in changed} == {ALEX}
    assert KIM not in str([e.details for e in changed])
    repos = broker_of(admin_app).repos
    assert repos.registrations.by_uuid(UUIDS[KIM]) is not None
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    refused = _audit(admin_app, "admin.")
    assert any(e.subject == KIM and e.outcome.value == "failure" for e in refused)


def test_an_address_given_to_an_entry_in_lee_s_organisation_brings_kim_s_card_no_nearer(
    app_factory: AppFactory, tmp_path: Path, own_slapd: Slapd
) -> None:
    # Kim's registration was made at Y00001. Kim's address is given to a new entry (a
    # new starter) at RX1, lee's organisation: lee may administer the new starter, not
    # the card registered to the entry that held the address before.
    app = make_admin_app(app_factory, tmp_path, directory_slapd=own_slapd)
    register(app, KIM)
    give_address_to_new_entry(own_slapd, "kim.taylor", "kim.taylor.new", org_code="RX1")
    broker = broker_of(app)
    lee_actor = Actor(name=LEE, org_codes=frozenset({"RX1"}), via="console")
    with pytest.raises(OutOfScopeError):
        broker.admin.registration(lee_actor, UUIDS[KIM])
    reason = Reason(kind=RemovalReason.LOST_CARD)
    with pytest.raises(OutOfScopeError):
        remove_registration(broker.admin, lee_actor, card_uuid=UUIDS[KIM], reason=reason)
    browser = app.test_client()
    sign_in(browser, LEE)
    page = browser.get(f"/admin/users/{KIM}")
    assert page.status_code == 200  # the new starter is lee's to look after
    text = page.get_data(as_text=True)
    assert UUIDS[KIM] not in text and 'id="admin-previous-holders-registration"' in text
    assert browser.get(f"/admin/users/{KIM}/remove").status_code == 303  # nothing to remove
    assert broker.repos.registrations.by_uuid(UUIDS[KIM]) is not None
    # The break-glass CLI, and Y00001's administrators, still can.
    cli = Actor(name="cli:root", org_codes=None, via="cli")
    assert remove_registration(broker.admin, cli, card_uuid=UUIDS[KIM], reason=reason)


def test_an_address_too_long_once_lower_cased_is_not_found_like_any_too_long(
    admin_app: Flask, lee: FlaskClient
) -> None:
    # "İ".lower() is two characters: 310 typed become 610, past the audit's column.
    before = broker_of(admin_app).repos.audit.head()
    for mail in ("x" * 321 + "@nhs.net", "\u0130" * 300 + "@x.nhs.net"):
        for path in (f"/admin/users/{urllib.parse.quote(mail)}", f"/admin/users/{mail}/remove"):
            response = lee.get(path)
            assert response.status_code == 404 and error_code_of(response) == "page_not_found"
    # Refused before the directory or the store is asked, as every over-long address is.
    assert broker_of(admin_app).repos.audit.head() == before


# Removal.


def test_removal_needs_a_reason_and_other_needs_words(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    page, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    text = page.get_data(as_text=True)
    assert '<legend class="legend">Why are you removing this registration?</legend>' in text
    for value in ("lost_card", "left_organisation", "wrong_link", "other"):
        assert f'<label class="radio-label" for="reason-{value}">' in text
    assert '<label class="label" for="reason-text">' in text
    for form in ({}, {"reason": "bored"}, {"reason": "other", "reason_text": "   "}):
        response = lee.post(f"/admin/users/{ALEX}/remove", data={"csrf_token": token, **form})
        assert response.status_code == 400
        assert error_code_of(response) == "admin_reason_required"
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None


def test_a_removal_without_the_csrf_token_is_refused(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    form = {"reason": "lost_card", "card_uuid": UUIDS[ALEX]}
    response = lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form)
    assert response.status_code == 400 and error_code_of(response) == "csrf_invalid"
    forged = lee.post(
        f"/admin/users/{ALEX}/remove/confirm", data={**form, "csrf_token": "forged" * 8}
    )
    assert forged.status_code == 400 and error_code_of(forged) == "csrf_invalid"
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None


def test_lee_removes_alexs_registration_and_alex_is_signed_out_everywhere(
    admin_app: Flask,
    lee: FlaskClient,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    register(admin_app, ALEX)
    # Alex is signed in by card and signed in to a relying party (tokens issued).
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    rp = Browser(alex)
    assert rp.redeem(rp.signed_in_code()).status_code == 200
    assert alex.get("/admin").status_code == 403

    _, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    confirm = lee.post(
        f"/admin/users/{ALEX}/remove",
        data={"csrf_token": token, "reason": "other", "reason_text": "card  snapped in two"},
    )
    assert confirm.status_code == 200
    text = confirm.get_data(as_text=True)
    assert 'id="confirm-remove"' in text and "Another reason: card snapped in two" in text
    # Nothing happens before the confirmation.
    repos = broker_of(admin_app).repos
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is not None and not session_ended

    form = confirmation_form(lee, ALEX, "other", "card  snapped in two")
    assert form["card_uuid"] == UUIDS[ALEX] and form["reason_text"] == "card snapped in two"
    done = lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form)
    assert done.status_code == 303 and done.headers["Location"] == f"/admin/users/{ALEX}"
    page = lee.get(done.headers["Location"]).get_data(as_text=True)
    assert 'id="admin-notice"' in page and "registration was removed" in page
    assert "1 signed-in session ended; 1 service told" in page
    assert 'id="admin-no-registration"' in page

    # The link is gone; alex's session ended with its tokens; the RP is told.
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is None
    assert [e.account_mail for e in session_ended] == [ALEX]
    assert session_ended[0].reason == EndReason.REGISTRATION_REMOVED
    assert session_ended[0].relying_parties == ("rp",) and session_ended[0].tokens_revoked >= 1
    with repos.store.session() as db:
        open_sessions = db.scalars(
            select(SigninSession).where(
                SigninSession.account_mail == ALEX, SigninSession.ended_at.is_(None)
            )
        ).all()
    assert open_sessions == []
    assert broker_of(admin_app).oidc.backchannel.deliver_due().delivered == 1
    assert len(test_rp.wait_for(1)) == 1 and "logout_token" in test_rp.received[0].form
    # Alex's browser is signed out (sent to sign in, no longer refused as a non-admin).
    assert alex.get("/admin").status_code == 303
    assert repos.sessions.active_for_account(ALEX) == []
    assert repos.sessions.active_for_account(LEE) != []

    # Audited with the administrator, the person and the reason.
    (entry,) = _audit(admin_app, "admin.registration.remove")
    assert entry.actor == LEE and entry.subject == ALEX and entry.organisation == "RX1"
    assert entry.details["reason"] == "other"
    assert entry.details["reason_text"] == "card snapped in two"
    assert entry.details["card_uuid"] == UUIDS[ALEX] and entry.details["via"] == "console"
    trail = lee.get(f"/admin/users/{ALEX}").get_data(as_text=True)
    assert 'data-event="admin.registration.remove"' in trail

    # Alex can register again.
    again = register(admin_app, ALEX)
    assert repos.registrations.by_uuid(UUIDS[ALEX]) == again


def test_a_stale_confirmation_removes_nothing(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    form = confirmation_form(lee, ALEX)
    assert lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form).status_code == 303
    register(admin_app, ALEX, uuid="555000000099")  # a new card, registered meanwhile
    again = lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form)
    assert again.status_code == 303
    page = lee.get(again.headers["Location"]).get_data(as_text=True)
    assert "changed or was removed while you were looking" in page
    assert broker_of(admin_app).repos.registrations.by_uuid("555000000099") is not None


def test_a_confirmation_does_not_remove_the_same_card_registered_again_since(
    admin_app: Flask, lee: FlaskClient, clock: FakeClock
) -> None:
    register(admin_app, ALEX)
    form = confirmation_form(lee, ALEX)
    # Meanwhile another administrator removes it, the card turns up and alex registers
    # it again (SQLite may give the new row the old one's id).
    repos = broker_of(admin_app).repos
    repos.registrations.remove(card_uuid=UUIDS[ALEX])
    clock.advance(timedelta(minutes=2))
    again = register(admin_app, ALEX)
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    stale = lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form)
    assert stale.status_code == 303
    page = lee.get(stale.headers["Location"]).get_data(as_text=True)
    assert "changed or was removed while you were looking" in page
    assert repos.registrations.by_uuid(UUIDS[ALEX]) == again
    assert repos.sessions.active_for_account(ALEX) != []
    (refused,) = _audit(admin_app, "admin.registration.remove")
    assert refused.error_code == "admin_registration_changed" and refused.subject == ALEX
    # A confirmation shown for this registration removes it; an empty or altered one not.
    fresh = confirmation_form(lee, ALEX)
    assert fresh["registration"] != form["registration"]
    for tag in ("", "0" * 32):
        lee.post(f"/admin/users/{ALEX}/remove/confirm", data={**fresh, "registration": tag})
        assert repos.registrations.by_uuid(UUIDS[ALEX]) == again
    assert lee.post(f"/admin/users/{ALEX}/remove/confirm", data=fresh).status_code == 303
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is None


def test_removals_refused_at_the_confirmation_are_audited(
    admin_app: Flask, lee: FlaskClient
) -> None:
    register(admin_app, ALEX)
    register(admin_app, SAM)
    _, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    confirm = f"/admin/users/{ALEX}/remove/confirm"
    tampered = {"csrf_token": token, "card_uuid": UUIDS[ALEX], "reason": "bored"}
    assert lee.post(confirm, data=tampered).status_code == 400
    # Sam's card (also RX1) on alex's confirmation, and a card no one has.
    for uuid in (UUIDS[SAM], "999999999999"):
        form = {"csrf_token": token, "card_uuid": uuid, "reason": "lost_card"}
        assert lee.post(confirm, data=form).status_code == 303
    refused = _audit(admin_app, "admin.registration.remove")
    assert [(e.outcome.value, e.error_code, e.details["card_uuid"]) for e in refused] == [
        ("failure", "admin_registration_changed", "999999999999"),
        ("failure", "admin_registration_changed", UUIDS[SAM]),
        ("failure", "admin_reason_required", UUIDS[ALEX]),
    ]
    assert {(e.actor, e.subject, e.details["via"]) for e in refused} == {(LEE, ALEX, "console")}
    repos = broker_of(admin_app).repos
    assert repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    assert repos.registrations.by_uuid(UUIDS[SAM]) is not None


def test_a_revocation_check_of_someone_with_no_registration_is_refused_and_audited(
    admin_app: Flask, lee: FlaskClient
) -> None:
    _, token = page_csrf(lee, f"/admin/users/{SAM}")
    answer = lee.post(f"/admin/users/{SAM}/check-revocation", data={"csrf_token": token})
    assert answer.status_code == 404 and error_code_of(answer) == "page_not_found"
    (entry,) = _audit(admin_app, "admin.revocation.check")
    assert entry.outcome.value == "failure" and entry.error_code == "registration_not_found"
    assert entry.actor == LEE and entry.subject == SAM and entry.details["via"] == "console"


# CSV export.


def test_the_csv_export_holds_my_organisations_registrations_only(
    admin_app: Flask, lee: FlaskClient
) -> None:
    register(admin_app, ALEX)
    register(admin_app, KIM)
    register(admin_app, "zz.formula@nhs.net", uuid="555000000088", org="RX1", how="=HYPERLINK(1)")
    response = lee.get("/admin/registrations.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {r["account_mail"] for r in rows} == {ALEX, "zz.formula@nhs.net"}
    alex = next(r for r in rows if r["account_mail"] == ALEX)
    assert alex["card_uuid"] == UUIDS[ALEX] and alex["org_code"] == "RX1"
    assert alex["link_mode"] == "uuid" and alex["registered_at"].endswith("Z")
    # A cell a spreadsheet would run as a formula is defused.
    formula = next(r for r in rows if r["account_mail"] == "zz.formula@nhs.net")
    assert formula["how"] == "'=HYPERLINK(1)"
    (entry,) = _audit(admin_app, "admin.registrations.export")
    assert entry.actor == LEE and entry.details["rows"] == 2


def test_an_export_misses_no_registration_removed_while_it_runs(
    admin_app: Flask, lee: FlaskClient
) -> None:
    # More than one batch; a removal between two batches shifts every row after it.
    mails = [f"p{i:03d}@nhs.net" for i in range(EXPORT_BATCH + 5)]
    for i, mail in enumerate(mails):
        register(admin_app, mail, uuid=f"7770{i:08d}", org="RX1")
    broker = broker_of(admin_app)
    actor = Actor(name=LEE, org_codes=frozenset({"RX1"}), via="console")
    rows = broker.admin.all_registrations(actor)
    first = [next(rows) for _ in range(EXPORT_BATCH)]
    broker.repos.registrations.remove(card_uuid=first[0].card_uuid)
    exported = {r.account_mail for r in [*first, *rows]}
    assert exported == set(mails)


def test_a_registration_kept_with_its_code_in_mixed_case_is_exported_and_found(
    admin_app: Flask, lee: FlaskClient
) -> None:
    # The directory spelled the organisation "Rx1" when alex registered; ODS codes are
    # case-insensitive, as the person's page already treats them.
    register(admin_app, ALEX, org="Rx1")
    register(admin_app, SAM, org="rX1")
    assert lee.get(f"/admin/users/{ALEX}").status_code == 200
    rows = list(
        csv.DictReader(io.StringIO(lee.get("/admin/registrations.csv").get_data(as_text=True)))
    )
    assert {r["account_mail"] for r in rows} == {ALEX, SAM}
    page = lee.get("/admin", query_string={"q": "morgan"}).get_data(as_text=True)
    assert f'data-mail="{ALEX}"' in page
    actor = Actor(name=LEE, org_codes=frozenset({"RX1"}), via="console")
    listed = broker_of(admin_app).admin.list_registrations(actor, org="rx1")
    assert {r.account_mail for r in listed.items} == {ALEX, SAM} and listed.total == 2


def _with_admin_orgs(app: Flask, codes: tuple[str, ...]) -> None:
    """The directory giving lee these organisation codes to administer."""
    switch = broker_of(app).directory
    real = switch.real

    class Granting:
        current_aup_version = real.current_aup_version

        def find_account(self, mail: str) -> MailAccount | None:
            account = real.find_account(mail)
            if account is not None and account.mail == LEE:
                return dataclasses.replace(account, admin_org_codes=codes)
            return account

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    switch.use(Granting())


@pytest.mark.parametrize(
    "odd", ["Y\u0141", 'R"X;', "A\r\nSet-Cookie: x=1", "RX2 ;", "\u0661\u0662"]
)
def test_organisation_codes_that_are_no_ods_codes_give_no_rights(
    admin_app: Flask, odd: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Directory data is not trusted to be well formed: such a code is left out (and
    # logged, for the directory's keepers), so it never reaches a header or a query.
    register(admin_app, ALEX)
    _with_admin_orgs(admin_app, ("rx1", odd))
    browser = admin_app.test_client()
    sign_in(browser, LEE)
    response = browser.get("/admin/registrations.csv")
    assert response.status_code == 200
    stamp = broker_of(admin_app).store.now().strftime("%Y%m%d")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="registrations-RX1-{stamp}.csv"'
    )
    assert any("not an organisation (ODS) code" in r.getMessage() for r in caplog.records)
    (entry,) = _audit(admin_app, "admin.registrations.export")
    assert entry.details["org_codes"] == ["RX1"] and entry.details["rows"] == 1
    # Only such codes: no organisation at all.
    _with_admin_orgs(admin_app, (odd,))
    sign_in(browser, LEE)
    refused = browser.get("/admin/registrations.csv")
    assert refused.status_code == 403 and error_code_of(refused) == "admin_not_authorised"


def test_a_registration_made_at_my_organisation_stays_mine_after_a_move(
    admin_app: Flask, lee: FlaskClient
) -> None:
    # Kim registered while at RX1, and the directory now says Y00001: RX1's
    # administrator can still find and remove that registration ("left the organisation").
    register(admin_app, KIM, org="RX1")
    page = lee.get("/admin", query_string={"q": "kim.taylor"}).get_data(as_text=True)
    assert f'data-mail="{KIM}"' in page and "Kim Taylor" in page and "Y00001" in page
    assert lee.get(f"/admin/users/{KIM}").status_code == 200
    form = confirmation_form(lee, KIM, "left_organisation")
    done = lee.post(f"/admin/users/{KIM}/remove/confirm", data=form)
    assert done.status_code == 303
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[KIM]) is None
    # With the registration gone, kim is Y00001's alone again.
    assert lee.get(f"/admin/users/{KIM}").status_code == 404


def test_lee_can_check_a_card_now_from_its_page(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    page, token = page_csrf(lee, f"/admin/users/{ALEX}")
    assert 'id="check-revocation"' in page.get_data(as_text=True)
    answer = lee.post(
        f"/admin/users/{ALEX}/check-revocation",
        data={"csrf_token": token, "card_uuid": UUIDS[ALEX]},
    )
    assert answer.status_code == 303 and answer.headers["Location"].endswith(f"/users/{ALEX}")
    shown = lee.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Smartcard sign-in is not configured here." in shown  # no [pki] in this app
    entry = broker_of(admin_app).repos.audit.list_recent(
        event_prefix="admin.revocation.check", limit=1
    )[0]
    assert entry.actor == LEE and entry.subject == ALEX
    # Someone else's organisation: as if the person did not exist.
    register(admin_app, KIM)
    other = lee.post(f"/admin/users/{KIM}/check-revocation", data={"csrf_token": token})
    assert other.status_code == 404


def test_a_nul_character_anywhere_is_refused_before_it_reaches_the_store(
    admin_app: Flask, lee: FlaskClient
) -> None:
    # PostgreSQL cannot hold a NUL in text: looked up, it was a database error (a 500).
    register(admin_app, ALEX)
    _, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    form = {"csrf_token": token, "reason": "lost_card", "card_uuid": UUIDS[ALEX] + "\x00"}
    for send, where in (
        (lambda: lee.get("/admin/users/alex%00@nhs.net"), "path"),
        (lambda: lee.get("/admin", query_string={"q": "alex\x00"}), "query"),
        (lambda: lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form), "form"),
    ):
        response = send()
        assert response.status_code == 400 and error_code_of(response) == "request_invalid"
        [entry, *_] = _audit(admin_app, "request.refused")
        assert entry.error_code == "request_invalid" and entry.details["nul_in"] == where
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None
