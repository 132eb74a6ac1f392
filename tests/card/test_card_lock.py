"""The session lock: the agent's card-removed report ends the session and logs its RPs
out (well within 2 s); any other report changes nothing and is answered the same."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from broker_fixtures import BACKENDS
from broker_support import broker_of
from card_fixtures import CardAppFactory
from card_support import (
    ALEX,
    CardBrowser,
    CardPki,
    SimulatedAgent,
    audits,
    last_audit,
    register_card,
)
from cryptography import x509
from flask import Flask
from oidc_support import (
    OTHER_POST_LOGOUT,
    OTHER_SECRET,
    Browser,
    TestRelyingParty,
    query_of,
    unverified_claims,
)
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from careid_agent.sessions import CardSession, NoticeAnswer, RemovalNotifier, post_json
from careid_broker.admin.reasons import Reason, RemovalReason
from careid_broker.admin.removal import remove_registration
from careid_broker.admin.rights import Actor
from careid_broker.card.lock import WindowLimiter
from careid_broker.store import EndedSession, EndReason, KeyAlgorithm
from support.clock import FakeClock


def _card_signin_to_rp(
    app: Flask, pki: CardPki, agent: SimulatedAgent | None = None
) -> tuple[Browser, str]:
    """A card sign-in (Alex's card unless `agent`) through the RP `rp` (which receives
    tokens); the card session."""
    agent = agent or pki.agent("alex")
    register_card(app, agent, ALEX[0])
    rp = Browser(app.test_client())
    authorization = rp.authorize()
    tx = query_of(authorization.location)["tx"]
    card = CardBrowser(rp.client)
    card.open_login(tx)
    answer = card.sign_in(agent, tx)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    authorization.redirect = answer.get_json()["redirect"]
    assert rp.redeem(authorization).status_code == 200
    return rp, answer.get_json()["cardSession"]


def _with_kept_rp(
    card_app_factory: CardAppFactory, test_rp: TestRelyingParty, **settings: object
) -> Flask:
    """An app whose "rp" and "other" both take back-channel logouts at `test_rp`, and
    "other" keeps its sign-in when the card leaves (card_removal = "none")."""
    return card_app_factory(
        backchannel_uri=test_rp.url,
        other_backchannel=test_rp.url + "?rp=other",
        other_card_removal="none",
        **settings,
    )


def _signed_in_to_other(rp: Browser) -> tuple[Browser, TestResponse]:
    """Single sign-on from `rp`'s browser into "other": ("other", its token answer)."""
    other = Browser(rp.client, client_id="other", redirect_uri="https://other.example.test/cb")
    tokens = other.redeem(other.signed_in_code(), auth="post", secret=OTHER_SECRET)
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    return other, tokens


def _removed(app: Flask, body: object, **headers: str):
    # The agent: its own HTTP client, no cookies, no Origin, no CSRF token.
    return app.test_client().post("/card/removed", json=body, headers=headers)


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_removing_the_card_ends_the_session_and_every_rp_is_told_within_two_seconds(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    app = card_app_factory(backchannel_uri=test_rp.url, broker={"dev_disable_workers": False})
    rp, card_session = _card_signin_to_rp(app, card_pki)
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0])

    started = time.monotonic()
    response = _removed(app, {"cardSession": card_session})
    received = test_rp.wait_for(1, timeout=5.0)
    elapsed = time.monotonic() - started

    assert response.status_code == 204 and response.get_data() == b""
    assert elapsed < 2.0, f"the RP heard of the removal after {elapsed:.2f} s"
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    assert [e.reason for e in session_ended] == ["card_removed"]
    assert "logout_token" in received[0].form
    entry = last_audit(app, "session.end")
    assert entry.subject == ALEX[0] and entry.details["reason"] == "card_removed"
    # The browser's session is gone too: the RP's next request needs a new sign-in.
    assert rp.authorize().location.startswith("/login?")


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_an_rp_with_card_removal_none_keeps_its_sign_in_while_a_logout_rp_is_ended(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    app = _with_kept_rp(card_app_factory, test_rp)
    rp, card_session = _card_signin_to_rp(app, card_pki)
    # The same card sign-in, single sign-on into "other" (card_removal = "none").
    other, other_tokens = _signed_in_to_other(rp)

    assert _removed(app, {"cardSession": card_session}).status_code == 204

    [ended] = session_ended
    assert ended.reason == "card_removed"
    assert ended.relying_parties == ("rp",) and ended.kept_relying_parties == ("other",)
    broker = broker_of(app)
    assert broker.oidc.backchannel.deliver_due().delivered == 1
    [received] = test_rp.wait_for(1)
    assert received.path == "/backchannel-logout"  # "other" was not told
    # "other" keeps its tokens: its refresh token still works after the card left.
    refreshed = other.token(
        {"grant_type": "refresh_token", "refresh_token": other_tokens.get_json()["refresh_token"]},
        auth="post",
        secret=OTHER_SECRET,
    )
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    entry = last_audit(app, "session.end")
    assert entry.details["relying_parties"] == ["rp"]
    assert entry.details["kept_relying_parties"] == ["other"]
    # The broker's own session ended all the same: nobody else at this workstation can
    # use it, for either service.
    assert rp.authorize().location.startswith("/login?")
    assert other.authorize().location.startswith("/login?")


def _kept_signin(
    app: Flask, pki: CardPki, agent: SimulatedAgent
) -> tuple[Browser, dict[str, object]]:
    """A card sign-in into "rp" and "other" (card_removal = "none"), then the card
    leaves the reader: "rp" is told, "other" keeps its tokens. ("other", its tokens.)"""
    rp, card_session = _card_signin_to_rp(app, pki, agent)
    other, tokens = _signed_in_to_other(rp)
    assert _removed(app, {"cardSession": card_session}).status_code == 204
    return other, tokens.get_json()


def _refresh_other(other: Browser, refresh_token: object):
    return other.token(
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth="post",
        secret=OTHER_SECRET,
    )


def test_a_kept_sign_in_never_outlives_the_sessions_lifetime(
    card_app_factory: CardAppFactory, card_pki: CardPki, card_clock: FakeClock
) -> None:
    app = card_app_factory(other_card_removal="none")
    other, tokens = _kept_signin(app, card_pki, card_pki.agent("alex"))
    card_clock.advance(timedelta(hours=7, minutes=59))  # within the 8 hours
    kept = _refresh_other(other, tokens["refresh_token"])
    assert kept.status_code == 200, kept.get_data(as_text=True)
    card_clock.advance(timedelta(minutes=1))
    refused = _refresh_other(other, kept.get_json()["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    # Ended there as an expiry: "other"'s tokens revoked, and it is told.
    entry = last_audit(app, "session.end")
    assert entry.details["reason"] == "expired" and entry.details["relying_parties"] == ["other"]


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_a_card_removed_after_the_idle_limit_ends_the_session_as_expired_for_every_rp(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    # The clinician walked away with the card in; the idle limit (2 h) has passed, so the
    # session is already dead: taking the card out later must not hand "other"
    # (card_removal = "none") a sign-in that lives on to the absolute lifetime.
    app = _with_kept_rp(card_app_factory, test_rp)
    rp, card_session = _card_signin_to_rp(app, card_pki)
    other, tokens = _signed_in_to_other(rp)
    card_clock.advance(timedelta(hours=2, minutes=1))

    assert _removed(app, {"cardSession": card_session}).status_code == 204

    [ended] = session_ended
    assert ended.reason == "expired"
    assert sorted(ended.relying_parties) == ["other", "rp"] and ended.kept_relying_parties == ()
    entry = last_audit(app, "session.end")
    assert entry.details["reason"] == "expired"
    assert "kept_relying_parties" not in entry.details
    refused = _refresh_other(other, tokens.get_json()["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    # Both relying parties are told, as at any expiry.
    assert broker_of(app).oidc.backchannel.deliver_due().delivered == 2
    received = test_rp.wait_for(2)
    audiences = sorted(unverified_claims(r.form["logout_token"])["aud"] for r in received)
    assert audiences == ["other", "rp"]


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    ("idle_at_removal", "kept"),
    [
        pytest.param(timedelta(hours=1, minutes=59), True, id="removed_before_the_idle_limit"),
        pytest.param(timedelta(hours=2, minutes=1), False, id="removed_after_it"),
    ],
)
def test_a_kept_sign_in_stops_if_its_session_was_idle_past_the_limit_when_the_card_left(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    test_rp: TestRelyingParty,
    idle_at_removal: timedelta,
    kept: bool,
) -> None:
    # Whichever way a session came to be recorded as ended by its card with "other"
    # keeping its sign-in (here the store is told so directly, as an earlier version
    # would have done), a removal after the idle limit keeps nothing alive.
    app = card_app_factory(other_backchannel=test_rp.url + "?rp=other", other_card_removal="none")
    rp, _ = _card_signin_to_rp(app, card_pki)
    other, tokens = _signed_in_to_other(rp)
    broker = broker_of(app)
    [session] = broker.repos.sessions.active_for_account(ALEX[0])
    card_clock.advance(idle_at_removal)
    ended = broker.repos.sessions.end_session(
        session.sid, EndReason.CARD_REMOVED, keep_clients=frozenset({"other"})
    )
    assert ended is not None and ended.kept_relying_parties == ("other",)
    card_clock.advance(timedelta(hours=1))  # well within the 8-hour lifetime

    refreshed = _refresh_other(other, tokens.get_json()["refresh_token"])
    if kept:
        assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
        return
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    entry = last_audit(app, "session.end")
    assert entry.details["reason"] == "expired" and entry.details["relying_parties"] == ["other"]
    # "other" is told its sign-in has ended, as at any expiry.
    assert broker.oidc.backchannel.deliver_due().delivered == 1
    [received] = test_rp.wait_for(1)
    assert unverified_claims(received.form["logout_token"])["aud"] == "other"


@pytest.mark.parametrize("ending", ["registration_removed", "card_revoked"])
def test_a_kept_sign_in_ends_with_its_cards_registration_or_certificate(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    card_clock: FakeClock,
    test_rp: TestRelyingParty,
    ending: str,
) -> None:
    # A certificate of this test's own (revoking a shared one would touch other tests).
    profile = card_pki.issue(f"alex_kept_{ending}", ALEX[1], ALEX[2])
    app = _with_kept_rp(
        card_app_factory,
        test_rp,
        pki=card_pki.pki_settings(revocation="crl", crl={"refresh_seconds": 60}),
    )
    other, tokens = _kept_signin(app, card_pki, SimulatedAgent(profile))
    broker = broker_of(app)
    assert broker.oidc.backchannel.deliver_due().delivered == 1  # "rp" only, so far
    if ending == "registration_removed":
        removal = remove_registration(
            broker.admin,
            Actor(name="admin@nhs.net", org_codes=None, via="cli"),
            card_uuid=ALEX[1],
            reason=Reason(kind=RemovalReason.LOST_CARD),
        )
        assert removal.relying_parties == ("other",)
    else:
        serial = x509.load_pem_x509_certificate(profile.certificate_pem.encode()).serial_number
        card_pki.pki.revoke(uuid=ALEX[1], serial=serial, reason="keyCompromise", now=card_clock.now)
        card_clock.advance(timedelta(seconds=61))
        assert broker.card.validator is not None
        assert broker.card.validator.revocation.crl.refresh_due() >= 1
        entry = last_audit(app, "session.end")
        assert entry.details["reason"] == "card_revoked"
        assert entry.details["relying_parties"] == ["other"]

    refused = _refresh_other(other, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    # "other" is told now, its sign-in having ended.
    assert broker.oidc.backchannel.deliver_due().delivered == 1
    received = test_rp.wait_for(2)
    audiences = [unverified_claims(r.form["logout_token"])["aud"] for r in received]
    assert audiences == ["rp", "other"]


def _logout(browser: Browser, id_token: object, **params: str):
    """The RP sends the browser to /logout with its ID token as the hint."""
    query = {"id_token_hint": id_token, "client_id": browser.client_id, **params}
    return browser.client.get("/logout", query_string=query)


def _hint_like(app: Flask, id_token: object, **changes: str) -> str:
    """An ID token signed by the broker, as `id_token` but for `changes`."""
    claims = {**unverified_claims(str(id_token)), **changes}
    return broker_of(app).oidc.signer.sign(claims, alg=KeyAlgorithm.RS256)


def _signed_in_now(browser: Browser) -> bool:
    return "code" in browser.authorize(prompt="none").params


@pytest.mark.parametrize("card_store_url", BACKENDS, indirect=True)
def test_an_rps_own_logout_ends_the_sign_in_it_kept_and_no_other(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    # Both RPs keep their sign-in when the card leaves ("rp" by [oidc] card_removal);
    # then "other" signs the person out, as its own sign-out button does.
    app = _with_kept_rp(card_app_factory, test_rp, oidc={"card_removal": "none"})
    rp, card_session = _card_signin_to_rp(app, card_pki)
    rp_tokens = rp.redeem(rp.signed_in_code()).get_json()
    other, other_tokens = _signed_in_to_other(rp)
    tokens = other_tokens.get_json()
    assert _removed(app, {"cardSession": card_session}).status_code == 204
    broker = broker_of(app)
    assert broker.oidc.backchannel.deliver_due().delivered == 0  # both kept theirs

    out = _logout(
        other, tokens["id_token"], post_logout_redirect_uri=OTHER_POST_LOGOUT, state="bye"
    )

    assert out.status_code == 302 and out.headers["Location"] == f"{OTHER_POST_LOGOUT}?state=bye"
    refused = _refresh_other(other, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    userinfo = other.client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.status_code == 401
    ended = session_ended[-1]
    assert ended.reason == "logout" and ended.relying_parties == ("other",)
    entry = last_audit(app, "session.end")
    assert entry.subject == ALEX[0] and entry.details["reason"] == "logout"
    assert entry.details["relying_parties"] == ["other"] and entry.details["tokens_revoked"] >= 1
    assert "signed out" in entry.details["why"]
    # Told, as /logout tells the RP that sent it when it ends a live session.
    assert broker.oidc.backchannel.deliver_due().delivered == 1
    [received] = test_rp.wait_for(1)
    logout_token = unverified_claims(received.form["logout_token"])
    assert logout_token["aud"] == "other"
    assert logout_token["sid"] == unverified_claims(tokens["id_token"])["sid"]
    # "rp" keeps its own sign-in: only the RP that signed out lost one.
    kept = rp.token({"grant_type": "refresh_token", "refresh_token": rp_tokens["refresh_token"]})
    assert kept.status_code == 200, kept.get_data(as_text=True)
    # The same logout again changes nothing more.
    assert _logout(other, tokens["id_token"]).status_code == 200
    assert len(audits(app, "session.end")) == 2
    assert broker.oidc.backchannel.deliver_due().delivered == 0


def test_the_last_persons_kept_sign_in_ends_by_its_rps_logout_not_the_next_persons_session(
    card_app_factory: CardAppFactory, card_pki: CardPki, test_rp: TestRelyingParty
) -> None:
    # A shared workstation: Alex takes the card out, Kim signs in at the same browser,
    # then Alex's tab of "other" sends its sign-out.
    app = _with_kept_rp(card_app_factory, test_rp)
    other, alex = _kept_signin(app, card_pki, card_pki.agent("alex"))
    kim = other.redeem(
        other.signed_in_code(mail="kim.taylor@nhs.net"), auth="post", secret=OTHER_SECRET
    )
    assert kim.status_code == 200, kim.get_data(as_text=True)

    out = _logout(other, alex["id_token"], post_logout_redirect_uri=OTHER_POST_LOGOUT)

    assert out.status_code == 302 and out.headers["Location"] == OTHER_POST_LOGOUT
    refused = _refresh_other(other, alex["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    assert _signed_in_now(other)  # Kim's session is Kim's
    assert _refresh_other(other, kim.get_json()["refresh_token"]).status_code == 200
    entry = last_audit(app, "session.end")
    assert entry.subject == ALEX[0] and entry.details["relying_parties"] == ["other"]


@pytest.mark.parametrize(
    "hint",
    [
        "another_rps_hint",
        "unknown_sid",
        "another_subject",
        "a_live_session_of_the_same_person",
    ],
)
def test_a_logout_hint_naming_no_kept_sign_in_of_its_rp_ends_none(
    card_app_factory: CardAppFactory, card_pki: CardPki, test_rp: TestRelyingParty, hint: str
) -> None:
    app = _with_kept_rp(card_app_factory, test_rp)
    rp, card_session = _card_signin_to_rp(app, card_pki)
    rp_tokens = rp.redeem(rp.signed_in_code()).get_json()
    other, other_tokens = _signed_in_to_other(rp)
    tokens = other_tokens.get_json()
    assert _removed(app, {"cardSession": card_session}).status_code == 204
    broker = broker_of(app)
    assert broker.oidc.backchannel.deliver_due().delivered == 1  # "rp" was told
    before = len(audits(app, "session.end"))
    sender, live = other, None
    if hint == "another_rps_hint":
        # "rp" kept nothing (card_removal = "logout"); its hint is for the same session.
        sender, id_token = rp, rp_tokens["id_token"]
    elif hint == "unknown_sid":
        id_token = _hint_like(app, tokens["id_token"], sid="0" * 48)
    elif hint == "another_subject":
        id_token = _hint_like(app, tokens["id_token"], sub="someone-else")
    else:
        # Alex signed in again elsewhere; that live session's hint names it, not the
        # ended one, while Kim holds this browser: as before, nothing ends.
        elsewhere = Browser(
            app.test_client(), client_id="other", redirect_uri="https://other.example.test/cb"
        )
        live = elsewhere.redeem(elsewhere.signed_in_code(), auth="post", secret=OTHER_SECRET)
        id_token = live.get_json()["id_token"]
        other.redeem(
            other.signed_in_code(mail="kim.taylor@nhs.net"), auth="post", secret=OTHER_SECRET
        )

    out = _logout(sender, id_token)

    assert out.status_code == 200
    kept = _refresh_other(other, tokens["refresh_token"])
    assert kept.status_code == 200, kept.get_data(as_text=True)
    assert len(audits(app, "session.end")) == before
    assert broker.oidc.backchannel.deliver_due().delivered == 0
    if live is not None:
        assert _signed_in_now(other)  # Kim
        assert _refresh_other(other, live.get_json()["refresh_token"]).status_code == 200


def test_reports_for_unknown_or_ended_sessions_change_nothing_and_look_the_same(
    card_app_factory: CardAppFactory,
    card_pki: CardPki,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    app = card_app_factory(backchannel_uri=test_rp.url)
    _, card_session = _card_signin_to_rp(app, card_pki)
    answers = [
        _removed(app, {"cardSession": "x" * 43}),
        _removed(app, {"cardSession": 12}),
        _removed(app, {"other": card_session}),
        _removed(app, ["not", "an", "object"]),
        app.test_client().post("/card/removed", data="not json"),
    ]
    assert {(a.status_code, a.get_data()) for a in answers} == {(204, b"")}
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0])
    assert session_ended == []

    first = _removed(app, {"cardSession": card_session})
    second = _removed(app, {"cardSession": card_session})
    assert (first.status_code, first.get_data()) == (second.status_code, second.get_data())
    assert len(session_ended) == 1  # no second logout for an ended session
    assert broker_of(app).oidc.backchannel.deliver_due().delivered == 1
    assert len(test_rp.wait_for(1)) == 1


def test_with_the_session_lock_off_a_report_ends_nothing(
    card_app_factory: CardAppFactory, card_pki: CardPki, session_ended: list[EndedSession]
) -> None:
    app = card_app_factory(card={"session_lock": True})
    _, card_session = _card_signin_to_rp(app, card_pki)
    off = card_app_factory(card={"session_lock": False})
    # The same store, a broker configured without the lock: it ignores the report.
    assert _removed(off, {"cardSession": card_session}).status_code == 204
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0])
    assert session_ended == []


def test_reports_are_rate_limited_per_client_address(
    card_app_factory: CardAppFactory,
) -> None:
    app = card_app_factory(card={"removal_rate_limit": 3, "removal_rate_window_seconds": 60})
    statuses = [_removed(app, {"cardSession": "y" * 43}).status_code for _ in range(4)]
    assert statuses == [204, 204, 204, 429]
    limited = _removed(app, {"cardSession": "y" * 43})
    assert limited.get_json()["error"] == "card_removal_throttled"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    other = app.test_client().post(
        "/card/removed", json={"cardSession": "y" * 43}, environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert other.status_code == 204


def test_junk_reports_from_a_shared_address_never_hold_up_a_real_removal(
    card_app_factory: CardAppFactory, card_pki: CardPki, session_ended: list[EndedSession]
) -> None:
    # Workstations behind one NAT address: someone there floods junk reports until the
    # address is throttled, then a card really leaves its reader.
    app = card_app_factory(card={"removal_rate_limit": 3, "removal_rate_window_seconds": 60})
    _, card_session = _card_signin_to_rp(app, card_pki)
    junk = [_removed(app, {"cardSession": f"junk-junk-junk-{n:04}"}) for n in range(5)]
    assert [r.status_code for r in junk] == [204, 204, 204, 429, 429]

    real = _removed(app, {"cardSession": card_session})
    assert (real.status_code, real.get_data()) == (204, b"")
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    assert [e.reason for e in session_ended] == ["card_removed"]
    # Naming nothing now (the session has ended), the same report is a miss like any
    # other: throttled, and so are bodies refused unread (no audit entry for each).
    assert _removed(app, {"cardSession": card_session}).status_code == 429
    audited = len(audits(app, "card.removed"))
    oversized = app.test_client().post(
        "/card/removed",
        data=b'{"cardSession": "' + b"x" * 2000 + b'"}',
        content_type="application/json",
    )
    assert oversized.status_code == 429
    assert len(audits(app, "card.removed")) == audited


@contextmanager
def _served(app: Flask) -> Iterator[str]:
    """The broker over real HTTP on 127.0.0.1 (the test client's address too); its origin."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_agents_notice_gets_through_a_flooded_address_and_heeds_retry_after(
    card_app_factory: CardAppFactory, card_pki: CardPki, session_ended: list[EndedSession]
) -> None:
    app = card_app_factory(card={"removal_rate_limit": 3, "removal_rate_window_seconds": 600})
    _, card_session = _card_signin_to_rp(app, card_pki)
    for n in range(4):  # junk from the workstation's shared address, until throttled
        _removed(app, {"cardSession": f"junk-junk-junk-{n:04}"})
    answers: list[NoticeAnswer] = []

    def post(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        answers.append(post_json(url, body, timeout))
        return answers[-1]

    with _served(app) as origin:
        notifier = RemovalNotifier(is_allowed=lambda o: o == origin, post=post, patience=60.0)
        session = CardSession(
            origin=origin, insertion_id="card-1", reader="R", card_session=card_session
        )
        (ended,) = notifier.notify([session])
        assert ended.result(timeout=10) is True
        # Sent again it names nothing and is throttled: the broker asks for the rest of
        # its ten-minute window, longer than the agent may wait, so it gives up at once
        # rather than try again sooner.
        (again,) = notifier.notify([session])
        assert again.result(timeout=10) is False
        notifier.close()
    assert [a.status for a in answers] == [204, 429]
    retry_after = answers[1].retry_after
    assert retry_after is not None and retry_after > 60
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0]) == []
    assert [e.reason for e in session_ended] == ["card_removed"]


def test_the_window_limiter_counts_per_key_and_forgets_old_windows() -> None:
    now = [100.0]
    limiter = WindowLimiter(limit=2, window=timedelta(seconds=10), clock=lambda: now[0], max_keys=2)
    assert limiter.allow("a") is None and limiter.allow("a") is None
    assert limiter.allow("a") == pytest.approx(10.0)
    assert limiter.allow("b") is None
    now[0] += 4
    assert limiter.allow("a") == pytest.approx(6.0)
    now[0] += 6
    assert limiter.allow("a") is None  # a new window
    assert limiter.allow("c") is None  # pruned b's stale window to make room
    assert limiter.allow("c") is None and limiter.allow("c") is not None
