"""RP-initiated logout and OpenID Connect Back-Channel Logout 1.0.

The back-channel tests run a tiny relying party on 127.0.0.1 and check the logout token
it receives the way an RP must (Back-Channel Logout 1.0 §2.6): signature by a published
key, `typ`, `iss`, `aud`, `events`, `sid`, `jti`, and no `nonce`.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of, csrf_token_from, error_code_of
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet
from oidc_support import (
    ISSUER,
    OTHER_SECRET,
    POST_LOGOUT,
    Browser,
    TestRelyingParty,
    id_token_claims,
    make_oidc_app,
)

from careid_broker.oidc.backchannel import (
    LOGOUT_EVENT,
    BackchannelLogout,
    DeliveryReport,
    Poster,
    post_form,
)
from careid_broker.store import Outcome
from careid_devkit.webmail.errors import LogoutTokenError
from careid_devkit.webmail.logout_token import JtiCache, LogoutTokenValidator
from support.clock import FakeClock

AppFactory = Callable[..., Flask]


@pytest.fixture
def oidc_app(app_factory: AppFactory, tmp_path: Path, test_rp: TestRelyingParty) -> Flask:
    return make_oidc_app(
        app_factory,
        tmp_path,
        backchannel_uri=test_rp.url,
        other_backchannel=test_rp.url + "?rp=other",
        backchannel_first_retry_seconds=5,
    )


@pytest.fixture
def oidc_browser(oidc_app: Flask) -> Browser:
    return Browser(oidc_app.test_client())


def _sign_in(oidc_browser: Browser) -> dict[str, Any]:
    response = oidc_browser.redeem(oidc_browser.signed_in_code())
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def _signed_in(oidc_browser: Browser) -> bool:
    return "code" in oidc_browser.authorize(prompt="none").params


def _sign_out(oidc_browser: Browser) -> None:
    page = oidc_browser.client.get("/signout").get_data(as_text=True)
    done = oidc_browser.client.post("/signout", data={"csrf_token": csrf_token_from(page)})
    assert done.status_code == 200


# RP-initiated logout.


def test_logout_with_id_token_hint_ends_the_session_and_returns_to_the_rp(
    oidc_browser: Browser,
) -> None:
    tokens = _sign_in(oidc_browser)
    response = oidc_browser.client.get(
        "/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": POST_LOGOUT,
            "state": "bye-state",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"{POST_LOGOUT}?state=bye-state"
    assert not _signed_in(oidc_browser)
    # The session's tokens die with it.
    userinfo = oidc_browser.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.status_code == 401


def test_logout_by_post_is_accepted(oidc_browser: Browser) -> None:
    tokens = _sign_in(oidc_browser)
    response = oidc_browser.client.post(
        "/logout",
        data={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": POST_LOGOUT},
    )
    assert response.status_code == 302 and response.headers["Location"] == POST_LOGOUT
    assert not _signed_in(oidc_browser)


def test_a_logout_posted_without_the_sign_in_cookie_goes_on_by_get(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    # How a browser sends another site's sign-out form: without the SameSite=Lax sign-in
    # cookie. It does send it on the top-level GET the 303 leads to, which ends the session.
    tokens = _sign_in(oidc_browser)
    form = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": POST_LOGOUT,
        "state": "bye-state",
    }
    posted = oidc_app.test_client().post("/logout", data=form)
    assert posted.status_code == 303
    assert "Set-Cookie" not in posted.headers and posted.headers["Cache-Control"] == "no-store"
    path, _, query = posted.headers["Location"].partition("?")
    assert path == "/logout" and urllib.parse.parse_qsl(query) == list(form.items())
    assert _signed_in(oidc_browser)  # nothing ends before the GET

    followed = oidc_browser.client.get(posted.headers["Location"])
    assert followed.status_code == 302
    assert followed.headers["Location"] == f"{POST_LOGOUT}?state=bye-state"
    assert not _signed_in(oidc_browser)


@pytest.mark.parametrize(
    "body",
    [
        "id_token_hint=not.a.token&post_logout_redirect_uri=" + urllib.parse.quote(POST_LOGOUT),
        "state=one&state=two&client_id=rp&client_id=other&ui_locales=%E2%80%AE&x=%C3%A9",
        "",
    ],
    ids=["bad_hint", "repeated_and_odd", "empty"],
)
def test_a_cookieless_logout_post_is_answered_as_the_same_get_would_be(
    oidc_app: Flask, oidc_browser: Browser, body: str
) -> None:
    _sign_in(oidc_browser)
    posted = oidc_app.test_client().post(
        "/logout?from=query",
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert posted.status_code == 303
    location = posted.headers["Location"]
    carried = urllib.parse.parse_qsl(location.partition("?")[2], keep_blank_values=True)
    sent = urllib.parse.parse_qsl(body, keep_blank_values=True)
    assert carried == [("from", "query"), *sent]  # every value, in order, repeats and all
    same_get = oidc_app.test_client().get("/logout", query_string=[("from", "query"), *sent])
    followed = oidc_app.test_client().get(location)
    assert followed.status_code != 303  # a GET is answered, never sent round again
    assert (followed.status_code, followed.headers.get("Location")) == (
        same_get.status_code,
        same_get.headers.get("Location"),
    )
    assert error_code_of(followed) == error_code_of(same_get)
    assert _signed_in(oidc_browser)  # none of these ends a session


def test_a_cookieless_logout_post_with_a_nul_is_refused_not_carried(oidc_app: Flask) -> None:
    posted = oidc_app.test_client().post("/logout", data={"state": "a\x00b"})
    assert posted.status_code == 400 and "Location" not in posted.headers
    assert error_code_of(posted) == "request_invalid"


def test_an_unregistered_post_logout_uri_is_never_redirected_to(oidc_browser: Browser) -> None:
    tokens = _sign_in(oidc_browser)
    response = oidc_browser.client.get(
        "/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://evil.example/landing",
        },
    )
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You have signed out" in response.get_data(as_text=True)
    assert not _signed_in(oidc_browser)


def test_an_invalid_id_token_hint_gets_an_error_page_and_ends_nothing(
    oidc_browser: Browser,
) -> None:
    tokens = _sign_in(oidc_browser)
    header, payload, _signature = tokens["id_token"].split(".")
    tampered = f"{header}.{payload}.{'A' * 40}"
    response = oidc_browser.client.get(
        "/logout",
        query_string={"id_token_hint": tampered, "post_logout_redirect_uri": POST_LOGOUT},
    )
    assert response.status_code == 400 and "Location" not in response.headers
    assert error_code_of(response) == "oidc_logout_invalid"
    assert _signed_in(oidc_browser)


def _refused_logout(oidc_browser: Browser, **query: str) -> str:
    response = oidc_browser.client.get("/logout", query_string=query)
    assert response.status_code == 400 and "Location" not in response.headers
    assert error_code_of(response) == "oidc_logout_invalid"
    return response.get_data(as_text=True)


@pytest.mark.parametrize(
    "case", ["tampered_hint", "foreign_issuer_hint", "hint_for_another_client"]
)
def test_a_refused_logout_still_offers_sign_out_of_every_service(
    oidc_app: Flask, oidc_browser: Browser, test_rp: TestRelyingParty, case: str
) -> None:
    """A bad hint or redirect never leaves fewer ways out than a good request."""
    tokens = _sign_in(oidc_browser)
    header, payload, _signature = tokens["id_token"].split(".")
    query = {
        "tampered_hint": {"id_token_hint": f"{header}.{payload}.{'A' * 40}"},
        "foreign_issuer_hint": {"id_token_hint": "not.a.token"},
        "hint_for_another_client": {
            "id_token_hint": tokens["id_token"],
            "client_id": "other",
            "post_logout_redirect_uri": POST_LOGOUT,
        },
    }[case]
    page = _refused_logout(oidc_browser, **query)
    assert "You are still signed in" in page
    assert "alex.morgan@nhs.net" in page
    assert "Sign out of every service" in page
    assert "close the browser window" not in page.lower()
    entry = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.logout", limit=1)[0]
    assert entry.error_code == "oidc_logout_invalid" and entry.subject == "alex.morgan@nhs.net"

    done = oidc_browser.client.post("/signout", data={"csrf_token": csrf_token_from(page)})
    assert done.status_code == 200 and "You have signed out" in done.get_data(as_text=True)
    assert not _signed_in(oidc_browser)
    # The relying party's session ends too: it is told by back-channel logout.
    assert broker_of(oidc_app).oidc.backchannel.deliver_due().delivered == 1
    assert test_rp.wait_for(1)[0].path == "/backchannel-logout"


def test_a_refused_logout_when_not_signed_in_says_so(oidc_browser: Browser) -> None:
    page = _refused_logout(oidc_browser, id_token_hint="not.a.token")
    assert "You are not signed in" in page and "Sign out of every service" not in page


def _segment(value: object) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize(
    "header",
    [{"alg": "RS256", "kid": 'a"b'}, {"alg": "RS256", "kid": "a\\b"}, {"alg": 'x"y'}, {"alg": "é"}],
    ids=["kid_quote", "kid_backslash", "alg_quote", "alg_non_ascii"],
)
def test_a_hint_whose_header_an_error_may_not_repeat_is_refused_and_audited(
    oidc_app: Flask, oidc_browser: Browser, header: dict[str, str]
) -> None:
    # authlib's refusal would repeat the header's alg or kid, which RFC 6749 §5.2 does
    # not allow in an error_description: a refusal all the same, never a 500.
    _sign_in(oidc_browser)
    hint = f"{_segment(header)}.{_segment({'sub': 'x'})}.AAAA"
    page = _refused_logout(oidc_browser, id_token_hint=hint)
    assert "You are still signed in" in page and "Sign out of every service" in page
    [entry] = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.logout", limit=1)
    assert entry.outcome == "failure" and entry.error_code == "oidc_logout_invalid"
    assert entry.details["oauth_error"] == "invalid_request"
    assert _signed_in(oidc_browser)


def test_a_hint_for_someone_else_does_not_sign_this_person_out(oidc_app: Flask) -> None:
    alex = Browser(oidc_app.test_client())
    kim = Browser(oidc_app.test_client())
    _sign_in(alex)
    kim_tokens = kim.redeem(kim.signed_in_code(mail="kim.taylor@nhs.net")).get_json()
    response = alex.client.get(
        "/logout",
        query_string={
            "id_token_hint": kim_tokens["id_token"],
            "post_logout_redirect_uri": POST_LOGOUT,
        },
    )
    assert response.status_code == 302
    assert _signed_in(alex)


def test_logout_without_a_hint_asks_first_and_never_redirects(oidc_browser: Browser) -> None:
    _sign_in(oidc_browser)
    asked = oidc_browser.client.get(
        "/logout", query_string={"client_id": "rp", "post_logout_redirect_uri": POST_LOGOUT}
    )
    assert asked.status_code == 200 and "Location" not in asked.headers
    page = asked.get_data(as_text=True)
    assert "Test RP asked to sign you out" in page
    assert _signed_in(oidc_browser), "a bare link must not sign anyone out"
    # The confirmation is an ordinary form: CSRF-protected.
    forged = oidc_browser.client.post("/logout/confirm", data={})
    assert forged.status_code == 400 and _signed_in(oidc_browser)
    confirmed = oidc_browser.client.post(
        "/logout/confirm", data={"csrf_token": csrf_token_from(page)}
    )
    assert confirmed.status_code == 200 and "Location" not in confirmed.headers
    assert not _signed_in(oidc_browser)


# Back-channel logout.


class _PublishedKeys:
    """The broker's JWKS and algorithms as the webmail's validator asks for them."""

    def __init__(self, oidc_browser: Browser) -> None:
        self._browser = oidc_browser

    def key_set(self, *, refresh: bool = False) -> KeySet:
        return KeySet.import_key_set(self._browser.client.get("/jwks").get_json())

    def signing_algorithms(self) -> list[str]:
        metadata = self._browser.client.get("/.well-known/openid-configuration").get_json()
        algorithms: list[str] = metadata["id_token_signing_alg_values_supported"]
        return algorithms


def _webmail_validator(oidc_browser: Browser, *, client_id: str) -> LogoutTokenValidator:
    clock = lambda: datetime.now(UTC)  # noqa: E731 - a one-line clock
    return LogoutTokenValidator(
        issuer=ISSUER,
        client_id=client_id,
        keys=_PublishedKeys(oidc_browser),
        clock=clock,
        max_age=timedelta(minutes=5),
        clock_skew=timedelta(seconds=30),
        replay=JtiCache(clock=clock),
    )


def _check_logout_token(
    token: str, oidc_browser: Browser, *, audience: str, expected_sid: str, expected_sub: str
) -> dict[str, Any]:
    keys = KeySet.import_key_set(oidc_browser.client.get("/jwks").get_json())
    decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    claims = dict(decoded.claims)
    assert decoded.header["typ"] == "logout+jwt" and decoded.header["kid"]
    assert claims["iss"] == ISSUER and claims["aud"] == audience
    assert claims["events"] == {LOGOUT_EVENT: {}}
    assert claims["sid"] == expected_sid and claims["sub"] == expected_sub
    assert claims["jti"] and claims["iat"] <= claims["exp"]
    assert "nonce" not in claims
    return claims


def test_ending_a_session_sends_a_logout_token_to_every_rp_of_it(
    oidc_app: Flask, test_rp: TestRelyingParty
) -> None:
    rp = Browser(oidc_app.test_client())
    tokens = _sign_in(rp)
    _, id_claims = id_token_claims(rp.client, tokens["id_token"])
    other = Browser(rp.client, client_id="other", redirect_uri="https://other.example.test/cb")
    other_auth = other.signed_in_code()  # single sign-on: same browser session
    assert other.redeem(other_auth, auth="post", secret=OTHER_SECRET).status_code == 200

    _sign_out(rp)
    report = broker_of(oidc_app).oidc.backchannel.deliver_due()
    assert report.delivered == 2
    received = test_rp.wait_for(2)
    by_path = {r.path: r for r in received}
    assert set(by_path) == {"/backchannel-logout", "/backchannel-logout?rp=other"}
    assert all(r.content_type == "application/x-www-form-urlencoded" for r in received)
    jtis = set()
    for path, audience in (
        ("/backchannel-logout", "rp"),
        ("/backchannel-logout?rp=other", "other"),
    ):
        claims = _check_logout_token(
            by_path[path].form["logout_token"],
            rp,
            audience=audience,
            expected_sid=id_claims["sid"],
            expected_sub=id_claims["sub"],
        )
        jtis.add(claims["jti"])
    assert len(jtis) == 2
    # And the demo webmail's own §2.6 validator (independent code) accepts it, once.
    validator = _webmail_validator(rp, client_id="rp")
    request = validator.validate(by_path["/backchannel-logout"].form["logout_token"])
    assert request.sid == id_claims["sid"] and request.sub == id_claims["sub"]
    with pytest.raises(LogoutTokenError):
        validator.validate(by_path["/backchannel-logout"].form["logout_token"])
    # Delivered once: a later pass sends nothing again.
    assert broker_of(oidc_app).oidc.backchannel.deliver_due().delivered == 0


def test_an_rp_that_fails_first_is_retried_after_a_back_off(
    oidc_app: Flask, test_rp: TestRelyingParty, clock: FakeClock
) -> None:
    rp = Browser(oidc_app.test_client())
    _sign_in(rp)
    test_rp.fail_next = 1
    _sign_out(rp)
    backchannel = broker_of(oidc_app).oidc.backchannel
    first = backchannel.deliver_due()
    assert first.retrying == 1 and first.delivered == 0 and test_rp.attempts == 1
    # Not due again until the back-off has passed.
    assert backchannel.deliver_due().retrying == 0 and test_rp.attempts == 1
    clock.advance(timedelta(seconds=6))
    second = backchannel.deliver_due()
    assert second.delivered == 1 and test_rp.attempts == 2
    assert len(test_rp.wait_for(1)) == 1


def test_a_retry_after_a_lost_answer_is_a_new_logout_token(
    app_factory: AppFactory, tmp_path: Path, test_rp: TestRelyingParty, clock: FakeClock
) -> None:
    # The RP takes the first logout but answers after the OP stopped waiting: the OP
    # must retry with a new jti (the RP would refuse the old one as a replay), and count
    # the logout delivered, not failed.
    app = make_oidc_app(
        app_factory,
        tmp_path,
        backchannel_uri=test_rp.url,
        backchannel_timeout_seconds=0.5,
        backchannel_first_retry_seconds=1,
    )
    rp = Browser(app.test_client())
    _, id_claims = id_token_claims(rp.client, _sign_in(rp)["id_token"])
    test_rp.slow_next, test_rp.slow_seconds = 1, 1.5
    _sign_out(rp)
    backchannel = broker_of(app).oidc.backchannel
    assert backchannel.deliver_due().retrying == 1
    clock.advance(timedelta(seconds=2))
    assert backchannel.deliver_due().delivered == 1
    first, second = test_rp.wait_for(2)
    assert test_rp.replays == 0
    jtis = [
        _check_logout_token(
            received.form["logout_token"],
            rp,
            audience="rp",
            expected_sid=id_claims["sid"],
            expected_sub=id_claims["sub"],
        )["jti"]
        for received in (first, second)
    ]
    assert jtis[0] != jtis[1]


def test_an_unreachable_rp_is_given_up_after_the_last_attempt(
    app_factory: AppFactory, tmp_path: Path, clock: FakeClock
) -> None:
    app = make_oidc_app(
        app_factory,
        tmp_path,
        backchannel_uri="http://127.0.0.1:9/backchannel-logout",  # discard port: refused
        backchannel_max_attempts=2,
        backchannel_first_retry_seconds=1,
        backchannel_timeout_seconds=1,
    )
    rp = Browser(app.test_client())
    _sign_in(rp)
    _sign_out(rp)
    backchannel = broker_of(app).oidc.backchannel
    assert backchannel.deliver_due().retrying == 1
    clock.advance(timedelta(seconds=2))
    assert backchannel.deliver_due().abandoned == 1
    clock.advance(timedelta(hours=1))
    assert backchannel.deliver_due() == DeliveryReport()


def test_the_delivery_thread_sends_without_being_asked(
    app_factory: AppFactory, tmp_path: Path, test_rp: TestRelyingParty
) -> None:
    # Workers on here (the other tests switch them off and drive deliveries themselves),
    # with a poll so slow that only the wake-up at sign-out can explain a quick delivery.
    app = make_oidc_app(
        app_factory,
        tmp_path,
        backchannel_uri=test_rp.url,
        backchannel_poll_seconds=60,
        broker={"dev_disable_workers": False},
    )
    rp = Browser(app.test_client())
    _sign_in(rp)
    provider = broker_of(app).oidc
    try:
        assert provider.worker is not None and provider.worker.running
        _sign_out(rp)
        assert len(test_rp.wait_for(1, timeout=5)) == 1
    finally:
        provider.stop_worker()


def test_a_logout_queued_before_a_restart_is_delivered_by_the_next_workers_alone(
    app_factory: AppFactory, tmp_path: Path, test_rp: TestRelyingParty
) -> None:
    # The broker that ended the session stopped before delivering (workers off here).
    before = make_oidc_app(app_factory, tmp_path, backchannel_uri=test_rp.url)
    rp = Browser(before.test_client())
    _sign_in(rp)
    _sign_out(rp)
    assert broker_of(before).repos.outbox.pending_count() == 1 and test_rp.attempts == 0
    # Two workers start on the same database and see no OpenID traffic at all, only
    # health checks: the logout is delivered anyway, and once.
    workers = [
        make_oidc_app(
            app_factory,
            tmp_path,
            backchannel_uri=test_rp.url,
            backchannel_poll_seconds=0.2,
            broker={"dev_disable_workers": False},
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.test_client().get("/healthz").status_code == 200
        assert len(test_rp.wait_for(1, timeout=5)) == 1
        time.sleep(1)  # several polls of both workers
        assert test_rp.attempts == 1
        assert broker_of(workers[0]).repos.outbox.pending_count() == 0
    finally:
        for worker in workers:
            broker_of(worker).oidc.stop_worker()


def _instance_beside(app: Flask, clock: FakeClock, post: Poster) -> BackchannelLogout:
    """Another broker instance's deliverer on the same database, posting with `post`."""
    provider = broker_of(app).oidc
    repos = broker_of(app).repos
    return BackchannelLogout(
        issuer=provider.issuer,
        clients=provider.clients,
        outbox=repos.outbox,
        signer=provider.signer,
        subjects=repos.subjects,
        audit=repos.audit,
        clock=clock,
        post=post,
        timeout=5.0,
    )


def _backchannel_audit(app: Flask) -> list[Outcome]:
    entries = broker_of(app).repos.audit.list_recent(event_prefix="oidc.backchannel_logout")
    return [e.outcome for e in entries]


def test_two_instances_send_each_logout_once_however_slow_the_rp_answers(
    app_factory: AppFactory, tmp_path: Path, test_rp: TestRelyingParty, clock: FakeClock
) -> None:
    app = make_oidc_app(app_factory, tmp_path, backchannel_uri=test_rp.url)
    for mail in ("alex.morgan@nhs.net", "kim.taylor@nhs.net") * 2:
        browser = Browser(app.test_client())
        assert browser.redeem(browser.signed_in_code(mail=mail)).status_code == 200
        _sign_out(browser)
    assert broker_of(app).repos.outbox.pending_count() == 4
    other = broker_of(make_oidc_app(app_factory, tmp_path, backchannel_uri=test_rp.url))
    sends = 0

    def slow_rp(url: str, form: Mapping[str, str], *, timeout: float) -> int:
        # Each answer takes about the timeout; during the third, the other instance's
        # deliverer makes its pass.
        nonlocal sends
        sends += 1
        status = post_form(url, form, timeout=timeout)
        clock.advance(timedelta(seconds=6))
        if sends == 3:
            assert other.oidc.backchannel.deliver_due().delivered == 1
        return status

    report = _instance_beside(app, clock, slow_rp).deliver_due()
    assert report == DeliveryReport(delivered=3)
    assert len(test_rp.wait_for(4)) == 4
    assert test_rp.attempts == 4, "a logout was sent by both instances"
    assert _backchannel_audit(app) == [Outcome.SUCCESS] * 4
    assert broker_of(app).repos.outbox.pending_count() == 0


def test_a_deliverer_whose_claim_was_taken_over_records_nothing(
    app_factory: AppFactory,
    tmp_path: Path,
    test_rp: TestRelyingParty,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One instance's POST hangs past its lease; another takes the logout over and
    # delivers it. The first must not count an attempt, clear the other's claim or
    # report the delivered logout abandoned.
    app = make_oidc_app(app_factory, tmp_path, backchannel_uri=test_rp.url)
    rp = Browser(app.test_client())
    _sign_in(rp)
    _sign_out(rp)
    other = broker_of(make_oidc_app(app_factory, tmp_path, backchannel_uri=test_rp.url))

    def hanging_rp(url: str, form: Mapping[str, str], *, timeout: float) -> int:
        clock.advance(timedelta(minutes=1))
        assert other.oidc.backchannel.deliver_due().delivered == 1
        raise TimeoutError("timed out")

    with caplog.at_level("WARNING", logger="careid_broker.oidc.backchannel"):
        report = _instance_beside(app, clock, hanging_rp).deliver_due()
    assert report == DeliveryReport()
    assert _backchannel_audit(app) == [Outcome.SUCCESS]
    assert len(test_rp.wait_for(1)) == 1 and test_rp.attempts == 1
    assert broker_of(app).repos.outbox.pending_count() == 0
    assert any("taken over" in r.getMessage() for r in caplog.records)
