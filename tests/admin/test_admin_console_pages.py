"""The console's pages as people use them: a way out, words instead of codes, the
removal form's errors."""

from __future__ import annotations

from admin_support import ALEX, LEE, SAM, confirmation_form, page_csrf, register, sign_in
from broker_support import broker_of
from flask import Flask
from flask.testing import FlaskClient

from careid_broker.store import Outcome


def test_every_console_page_has_sign_out_in_its_header(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    for path in ("/admin", f"/admin/users/{ALEX}", f"/admin/users/{ALEX}/remove"):
        page = lee.get(path).get_data(as_text=True)
        header = page.split('<header class="header">', 1)[1].split("</header>", 1)[0]
        assert 'id="header-signout"' in header, path
        assert f'id="header-signed-in-as">{LEE}<' in header, path
    _, token = page_csrf(lee, "/admin")
    done = lee.post("/signout", data={"csrf_token": token})
    assert "You have signed out" in done.get_data(as_text=True)
    assert 'id="header-signout"' not in done.get_data(as_text=True)
    assert broker_of(admin_app).repos.sessions.active_for_account(LEE) == []
    # Signed out: the console sends the browser to sign in again.
    assert lee.get("/admin").status_code == 303


def test_recent_signins_include_refused_cards_by_uuid_and_certificate_in_words(
    admin_app: Flask, lee: FlaskClient
) -> None:
    """ "Why can't Alex sign in?": the refused card attempts are there, each in words
    with its code beside it for the helpdesk."""
    registration = register(admin_app, ALEX)
    broker = broker_of(admin_app)
    # Refused before the broker knew whose card it was: under the UUID the card claims,
    # and (a certificate whose subject did not decode) under nobody at all.
    broker.audit(
        "signin.card",
        outcome=Outcome.FAILURE,
        code="certificate_revoked",
        subject=registration.card_uuid,
        details={"uuid": registration.card_uuid, "cert_serial": registration.cert_serial},
    )
    broker.audit(
        "signin.card",
        outcome=Outcome.FAILURE,
        code="certificate_untrusted",
        details={"cert_serial": registration.cert_serial.upper()},
    )
    broker.audit(
        "signin.card",
        outcome=Outcome.FAILURE,
        code="certificate_expired",
        details={"cert_serial": "0BADCAFE"},  # someone else's card
    )
    page = lee.get(f"/admin/users/{ALEX}").get_data(as_text=True)
    signins = page.split('id="admin-signins"', 1)[1].split("</table>", 1)[0]
    assert "Smartcard certificate revoked (<code>certificate_revoked</code>)" in signins
    assert "not issued by a trusted authority (<code>certificate_untrusted</code>)" in signins
    assert "certificate_expired" not in signins
    assert "failure (" not in page


def test_codes_and_events_are_words_with_the_code_beside_them(
    admin_app: Flask, lee: FlaskClient
) -> None:
    page = lee.get(f"/admin/users/{SAM}").get_data(as_text=True)
    can = page.split('id="admin-account-can-sign-in">', 1)[1].split("</dd>", 1)[0]
    assert can == "No: Acceptable use policy not accepted (<code>aup_not_accepted</code>)"
    register(admin_app, ALEX)
    sign_in(admin_app.test_client(), ALEX)
    trail = lee.get(f"/admin/users/{ALEX}").get_data(as_text=True).split('id="admin-audit"')[1]
    assert "Smartcard sign-in (<code>signin.card</code>)" in trail
    assert '<td data-label="Result">Succeeded</td>' in trail


def test_another_reason_without_words_is_the_boxs_error(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    _, token = page_csrf(lee, f"/admin/users/{ALEX}/remove")
    response = lee.post(
        f"/admin/users/{ALEX}/remove", data={"csrf_token": token, "reason": "other"}
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'data-error-code="admin_reason_required"' in page
    assert '<a href="#reason-text">Describe the other reason' in page
    assert 'aria-describedby="reason-text-hint reason-text-error" aria-invalid="true"' in page
    assert 'id="reason-other" name="reason" value="other" checked>' in page
    assert 'id="error-summary" role="alert"' in page and "autofocus" in page
    # No choice at all: the error is the radios'.
    response = lee.post(f"/admin/users/{ALEX}/remove", data={"csrf_token": token})
    page = response.get_data(as_text=True)
    assert '<a href="#reason-lost_card">' in page and 'id="reason-error"' in page
    assert page.count('aria-invalid="true"') == 4  # every radio


def test_a_removal_with_no_one_signed_in_does_not_read_like_a_fault(
    admin_app: Flask, lee: FlaskClient
) -> None:
    register(admin_app, ALEX)
    form = confirmation_form(lee, ALEX)
    done = lee.post(f"/admin/users/{ALEX}/remove/confirm", data=form, follow_redirects=True)
    notice = done.get_data(as_text=True).split('id="admin-notice"', 1)[1].split("</div>", 1)[0]
    assert "not signed in anywhere, so no session had to end" in notice
    assert "0 signed-in sessions" not in notice
