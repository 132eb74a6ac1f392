"""Refusals at the token-holding endpoints (/token, /revoke, /userinfo), as an RP's
OAuth library sees them: always JSON with an RFC 6749 / RFC 6750 error, never a page or
a 500, and each one audited.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from broker_support import broker_of
from flask import Flask
from oidc_support import (
    JWT_SECRET,
    LOOPBACK_REDIRECT,
    OTHER_SECRET,
    REDIRECT,
    RP_SECRET,
    Browser,
    basic,
    client_assertion,
    make_oidc_app,
)
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from careid_broker.codes import BrokerCode, message_for
from careid_broker.errors import DirectoryUnavailableError
from careid_broker.oidc.client_auth import ClientKeyResolver, ClientSecretJwt
from careid_broker.oidc.request_checks import refusing_unworded
from careid_broker.store import AuditRecord, StoreUnavailableError
from support.clock import FakeClock

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The endpoints a client authenticates at, and the audit event of each.
CLIENT_ENDPOINTS = [("/token", "oidc.token"), ("/revoke", "oidc.revocation")]


@pytest.fixture
def oidc_app(app_factory: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_oidc_app(app_factory, tmp_path)


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _audit_entries(app: Flask, event: str) -> list[AuditRecord]:
    return broker_of(app).repos.audit.list_recent(event_prefix=event, limit=50)


def _last(app: Flask, event: str) -> AuditRecord:
    return _audit_entries(app, event)[0]


def _json_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"] == error, body
    assert response.headers["Cache-Control"] == "no-store"
    return body


# Client authentication that cannot even be read.


@pytest.mark.parametrize(("path", "event"), CLIENT_ENDPOINTS)
def test_basic_credentials_that_are_not_utf8_are_invalid_client(
    oidc_app: Flask, path: str, event: str
) -> None:
    # "rp\xff:x": the form-encoded client id and secret must be UTF-8 (RFC 6749 §2.3.1).
    header = {"Authorization": "Basic " + base64.b64encode(b"rp\xff:x").decode("ascii")}
    form = {"grant_type": "authorization_code", "code": "x", "token": "x"}
    response = oidc_app.test_client().post(path, data=form, headers=header)
    body = _json_error(response, 401, "invalid_client")
    assert "UTF-8" in body["error_description"]
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    entry = _last(oidc_app, event)
    assert entry.outcome == "failure" and entry.error_code == "oidc_token_refused"
    assert entry.details["reason"] == "invalid_client"


@pytest.mark.parametrize("header", [{"alg": ["RS256"]}, {"alg": {}}, {"alg": 256}])
@pytest.mark.parametrize(("path", "event"), CLIENT_ENDPOINTS)
def test_a_client_assertion_without_a_string_alg_is_invalid_client(
    oidc_app: Flask, header: dict[str, Any], path: str, event: str
) -> None:
    assertion = f"{_segment(header)}.{_segment({'iss': 'jwtrp', 'sub': 'jwtrp'})}.AAAA"
    form = {
        "grant_type": "authorization_code",
        "code": "x",
        "token": "x",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    response = oidc_app.test_client().post(path, data=form)
    body = _json_error(response, 401, "invalid_client")
    assert "alg" in body["error_description"]
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    entry = _last(oidc_app, event)
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_client"


# RFC 7521 §4.2: the client an assertion authenticates is the one the request names.


def test_private_key_jwt_for_another_client_id_is_invalid_client(oidc_app: Flask) -> None:
    jwt_rp = Browser(oidc_app.test_client(), client_id="jwtrp")
    authorization = jwt_rp.signed_in_code()
    form = {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": REDIRECT,
        "code_verifier": authorization.verifier,
        **client_assertion("jwtrp"),
    }
    refused = jwt_rp.client.post("/token", data={**form, "client_id": "rp"})
    body = _json_error(refused, 401, "invalid_client")
    assert "client_id" in body["error_description"]
    entry = _last(oidc_app, "oidc.token")
    assert entry.details["reason"] == "invalid_client"
    assert entry.details["client_id_claimed"] == "rp"
    # The client's own id, or none at all, is what RFC 7523 §3 expects.
    fresh = {**form, **client_assertion("jwtrp"), "client_id": "jwtrp"}
    assert jwt_rp.client.post("/token", data=fresh).status_code == 200


# An assertion's exp is a number the client writes: one no clock can reach is an
# assertion valid for too long, never a 500.


@pytest.mark.parametrize(
    "exp", [10**12, 1e300, 2**62, 2**1100], ids=["year-33658", "1e300", "2^62", "2^1100"]
)
@pytest.mark.parametrize("client_id", ["jwtrp", "secretjwt"])
def test_a_client_assertion_expiring_beyond_any_calendar_is_invalid_client(
    oidc_app: Flask, client_id: str, exp: float
) -> None:
    browser = Browser(oidc_app.test_client(), client_id=client_id)
    authorization = browser.signed_in_code()
    secret = JWT_SECRET if client_id == "secretjwt" else None
    form = {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": REDIRECT,
        "code_verifier": authorization.verifier,
    }
    refused = browser.client.post(
        "/token", data={**form, **client_assertion(client_id, exp=exp, hmac_secret=secret)}
    )
    body = _json_error(refused, 400, "invalid_client")
    assert "valid for too long" in body["error_description"]
    entry = _last(oidc_app, "oidc.token")
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_client"
    # Refused before the code was touched: the client's next, proper assertion redeems it.
    fresh = browser.client.post(
        "/token", data={**form, **client_assertion(client_id, hmac_secret=secret)}
    )
    assert fresh.status_code == 200, fresh.get_data(as_text=True)


@pytest.mark.parametrize("exp", [math.nan, math.inf, -math.inf, True, "4102444800", None], ids=repr)
def test_an_exp_that_is_not_a_finite_number_spends_no_jti(
    oidc_app: Flask, clock: FakeClock, exp: object
) -> None:
    # joserfc refuses these before the jti is looked at; the jti check refuses them too,
    # rather than reading True as 1970 or NaN as a time.
    check = ClientSecretJwt(
        audiences=["https://broker.example/token"],
        resolver=ClientKeyResolver(),
        jtis=broker_of(oidc_app).repos.jtis,
        clock=clock,
    )
    with pytest.raises(InvalidClientError, match="exp must be a number"):
        check.validate_jti({"sub": "secretjwt", "exp": exp}, "jti-1")
    # Nothing was remembered: the same jti with a proper exp is accepted once.
    proper = {"sub": "secretjwt", "exp": clock.now.timestamp() + 60}
    assert check.validate_jti(proper, "jti-1") is True
    assert check.validate_jti(proper, "jti-1") is False


# RFC 7009 revocation.


def _tokens(browser: Browser) -> dict[str, Any]:
    response = browser.redeem(browser.signed_in_code())
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _userinfo_status(browser: Browser, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return browser.client.get("/userinfo", headers=headers).status_code


@pytest.mark.parametrize("hint", ["refresh_token", "id_token", "urn:example:unknown"])
def test_a_token_type_hint_the_broker_does_not_know_is_ignored(oidc_app: Flask, hint: str) -> None:
    # RFC 7009 §2.2: the hint only speeds the lookup up; a wrong or unknown one must
    # not leave the token alive (and unsupported_token_type is not a 401).
    browser = Browser(oidc_app.test_client())
    tokens = _tokens(browser)
    response = browser.client.post(
        "/revoke",
        data={"token": tokens["access_token"], "token_type_hint": hint},
        headers=basic("rp", RP_SECRET),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _userinfo_status(browser, tokens["access_token"]) == 401


def test_a_revocation_without_a_token_says_what_is_missing(oidc_app: Flask) -> None:
    client = oidc_app.test_client()
    response = client.post("/revoke", data={}, headers=basic("rp", RP_SECRET))
    body = _json_error(response, 400, "invalid_request")
    assert "token" in body["error_description"]
    assert _last(oidc_app, "oidc.revocation").details["reason"] == "invalid_request"
    # Without client authentication: a 401 always names the scheme to use.
    unauthenticated = client.post("/revoke", data={"token": "x"})
    _json_error(unauthenticated, 401, "invalid_client")
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Basic ")


# The broker's own failures, answered to an RP's OAuth library.


class _DirectoryDown:
    """A directory that cannot be reached (in front of the real one's other parts)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.current_aup_version = real.current_aup_version

    def find_account(self, mail: str) -> None:
        raise DirectoryUnavailableError(detail="test: directory stopped")

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def _unavailable(response: TestResponse, careid_error: str) -> None:
    body = _json_error(response, 503, "temporarily_unavailable")
    assert body["careid_error"] == careid_error and body["request_id"]
    assert body["error_description"] == message_for(BrokerCode(careid_error))
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["Retry-After"] == "30"


def test_a_directory_outage_at_the_token_endpoint_is_json_for_the_rp(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    refresh_token = _tokens(browser)["refresh_token"]
    switch = broker_of(oidc_app).directory
    switch.use(_DirectoryDown(switch.real))
    try:
        # Whatever the client says it accepts: an RP's library parses JSON only.
        down = browser.client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={**basic("rp", RP_SECRET), "Accept": "text/html,*/*;q=0.8"},
        )
        _unavailable(down, "directory_unavailable")
    finally:
        switch.restore()
    entry = _last(oidc_app, "oidc.token")
    assert entry.error_code == "oidc_token_refused"
    assert entry.details["reason"] == "directory_unavailable"
    # Nothing was spent: the same refresh token works once the directory is back.
    again = browser.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
    assert again.status_code == 200, again.get_data(as_text=True)


def test_a_store_outage_at_revocation_and_userinfo_is_json_for_the_rp(
    oidc_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = Browser(oidc_app.test_client())
    tokens = _tokens(browser)
    repository = broker_of(oidc_app).repos.tokens

    def gone(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError(detail="test: the database went away")

    monkeypatch.setattr(repository, "find", gone)
    monkeypatch.setattr(repository, "lookup_access_token", gone)
    revoked = browser.client.post(
        "/revoke", data={"token": tokens["access_token"]}, headers=basic("rp", RP_SECRET)
    )
    _unavailable(revoked, "store_unavailable")
    info = browser.client.get(
        "/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}", "Accept": "text/html"},
    )
    _unavailable(info, "store_unavailable")
    monkeypatch.undo()
    assert _last(oidc_app, "oidc.revocation").details["reason"] == "store_unavailable"
    userinfo = _last(oidc_app, "oidc.userinfo")
    assert userinfo.outcome == "failure" and userinfo.details["reason"] == "store_unavailable"


def test_an_unexpected_failure_at_the_token_endpoint_is_json_for_the_rp(
    oidc_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = Browser(oidc_app.test_client())
    refresh_token = _tokens(browser)["refresh_token"]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("test: a fault in the broker")

    monkeypatch.setattr(broker_of(oidc_app).repos.tokens, "find", broken)
    failed = browser.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
    body = _json_error(failed, 500, "server_error")
    assert body["careid_error"] == "broker_internal"
    assert body["error_description"] == message_for(BrokerCode.BROKER_INTERNAL)
    assert failed.headers["Pragma"] == "no-cache"
    monkeypatch.undo()
    assert _last(oidc_app, "oidc.token").details["reason"] == "broker_internal"


# RFC 6750 at /userinfo.


def _challenge(response: TestResponse) -> str:
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.split()[0] == "Bearer", challenge
    return challenge


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic cnA6eA=="}, {"Authorization": "Negotiate abc"}]
)
def test_userinfo_without_a_bearer_token_is_challenged_without_an_error_code(
    oidc_app: Flask, headers: dict[str, str]
) -> None:
    # RFC 6750 §3.1: a request with no bearer credentials gets no error code, only the
    # challenge; the description says what to send.
    response = oidc_app.test_client().get("/userinfo", headers=headers)
    assert response.status_code == 401 and response.mimetype == "application/json"
    assert "error=" not in _challenge(response)
    body = response.get_json()
    assert "error" not in body and "Bearer" in body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    entry = _last(oidc_app, "oidc.userinfo")
    assert entry.outcome == "failure" and entry.error_code == "oidc_token_refused"
    assert entry.details["reason"] == "no_bearer_token"


def test_userinfo_with_a_token_sent_two_ways_is_invalid_request(oidc_app: Flask) -> None:
    # RFC 6750 §2: a client MUST NOT send the token by more than one method.
    browser = Browser(oidc_app.test_client())
    access_token = _tokens(browser)["access_token"]
    bearer = {"Authorization": f"Bearer {access_token}"}
    for response in (
        browser.client.post("/userinfo", data={"access_token": access_token}, headers=bearer),
        browser.client.get("/userinfo", query_string={"access_token": access_token}),
        browser.client.get("/userinfo", headers={"Authorization": "Bearer"}),
    ):
        body = _json_error(response, 400, "invalid_request")
        assert body["error_description"]
        assert 'error="invalid_request"' in _challenge(response)
        assert _last(oidc_app, "oidc.userinfo").details["reason"] == "invalid_request"


def test_userinfo_with_a_dead_token_is_invalid_token_and_audited(oidc_app: Flask) -> None:
    response = oidc_app.test_client().get(
        "/userinfo", headers={"Authorization": "Bearer not-a-token"}
    )
    _json_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in _challenge(response)
    assert _last(oidc_app, "oidc.userinfo").details["reason"] == "invalid_token"


# A token request that is not well formed (RFC 6749 §3.2, §4.1.3).


def test_a_malformed_token_request_is_invalid_request(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    authorization = browser.signed_in_code()
    form = {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": REDIRECT,
        "code_verifier": authorization.verifier or "",
    }
    auth = basic("rp", RP_SECRET)
    as_json = browser.client.post("/token", json=form, headers=auth)
    assert "form" in _json_error(as_json, 400, "invalid_request")["error_description"]
    no_grant = browser.client.post("/token", data={"code": authorization.code}, headers=auth)
    assert "grant_type" in _json_error(no_grant, 400, "invalid_request")["error_description"]
    twice = browser.client.post(
        "/token",
        data=MultiDict([*form.items(), ("code", "another-code")]),
        headers=auth,
    )
    assert _json_error(twice, 400, "invalid_request")["error_description"] == (
        "code is sent more than once."
    )
    reasons = [entry.details["reason"] for entry in _audit_entries(oidc_app, "oidc.token")[:3]]
    assert reasons == ["invalid_request"] * 3
    # None of them spent the code.
    assert browser.client.post("/token", data=form, headers=auth).status_code == 200


def test_a_nul_character_at_the_token_endpoint_is_invalid_request_in_oauth_json(
    oidc_app: Flask,
) -> None:
    answer = Browser(oidc_app.test_client()).token(
        {"grant_type": "authorization_code", "code": "x\x00y"}
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request"
    assert answer.headers["Cache-Control"] == "no-store"
    details = _last(oidc_app, "request.refused").details
    assert (details["endpoint"], details["nul_in"]) == ("oidc.token", "form")


@pytest.mark.parametrize("path", ["/token", "/revoke", "/userinfo"])
def test_an_over_large_body_or_a_wrong_method_is_answered_in_oauth_json(
    oidc_app: Flask, path: str
) -> None:
    """Errors at these endpoints are always OAuth JSON (README), even those Flask raises
    before the view: a body over the limit, a method the route does not take."""
    client = oidc_app.test_client()
    too_large = client.post(path, data={"x": "a" * (300 * 1024)})
    assert too_large.status_code == 413
    assert too_large.get_json()["error"] == "invalid_request"
    assert too_large.headers["Cache-Control"] == "no-store"
    wrong_method = client.put(path)
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"] == "invalid_request"
    assert wrong_method.headers["Cache-Control"] == "no-store"
    assert "Allow" in wrong_method.headers
    # Elsewhere the person still gets the broker's page.
    assert "text/html" in client.put("/login").content_type


# A request whose text an OAuth error may not repeat (RFC 6749 §5.2 allows only
# %x20-21 / %x23-5B / %x5D-7E in error_description): refused, never a 500.


@pytest.mark.parametrize("alg", ["ES\\256", 'x"y', "é"])
@pytest.mark.parametrize(("path", "event"), CLIENT_ENDPOINTS)
def test_a_client_assertion_alg_an_error_may_not_repeat_is_invalid_client(
    oidc_app: Flask, alg: str, path: str, event: str
) -> None:
    assertion = f"{_segment({'alg': alg})}.{_segment({'iss': 'jwtrp', 'sub': 'jwtrp'})}.AAAA"
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "x",
        "token": "x",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    response = oidc_app.test_client().post(path, data=form)
    body = _json_error(response, 401, "invalid_client")
    assert alg not in body["error_description"]
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    entry = _last(oidc_app, event)
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_client"


@pytest.mark.parametrize("name", ["%C3%A9", "a%22", "b%5C", "resource"])
def test_a_repeated_parameter_the_token_endpoint_does_not_know_is_ignored(
    oidc_app: Flask, name: str
) -> None:
    """RFC 6749 §3.2: unrecognised parameters are ignored, however often sent (and
    never repeated back): the request is answered on its merits, never a 500."""
    response = oidc_app.test_client().post(
        "/token",
        data=f"grant_type=refresh_token&refresh_token=x&{name}=1&{name}=2",
        content_type="application/x-www-form-urlencoded",
        headers=basic("rp", RP_SECRET),
    )
    body = _json_error(response, 400, "invalid_grant")
    assert "1" not in body.get("error_description", "")
    known = oidc_app.test_client().post(
        "/token",
        data="grant_type=refresh_token&refresh_token=x&refresh_token=y",
        content_type="application/x-www-form-urlencoded",
        headers=basic("rp", RP_SECRET),
    )
    body = _json_error(known, 400, "invalid_request")
    assert body["error_description"] == "refresh_token is sent more than once."
    assert _last(oidc_app, "oidc.token").details["reason"] == "invalid_request"


def test_only_authlibs_refusal_to_word_an_error_becomes_the_endpoints_refusal() -> None:
    fixed = InvalidRequestError("The request holds characters it may not.")
    with pytest.raises(InvalidRequestError) as refused:
        with refusing_unworded(lambda: fixed):
            InvalidClientError(description='alg "ES\\256" is not allowed')
    assert refused.value is fixed
    # Any other ValueError is a fault, and goes on as one (a 500, logged), never
    # mistaken for a bad request.
    with pytest.raises(ValueError, match="a fault"):
        with refusing_unworded(lambda: fixed):
            raise ValueError("a fault")


# RFC 6749 §2.3: a client uses one authentication method per request; a wrong secret
# must not fall through to another method, or to another client's credentials.


def _two_ways(authorization_code: str, verifier: str | None) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": authorization_code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier or "",
    }
    return {
        "basic_and_wrong_form_secret": (
            {**form, "client_id": "rp", "client_secret": "not-the-secret"},
            basic("rp", RP_SECRET),
        ),
        "basic_and_another_clients_form_credentials": (
            {**form, "client_id": "other", "client_secret": OTHER_SECRET},
            basic("rp", RP_SECRET),
        ),
        "basic_and_a_client_assertion": (
            {**form, **client_assertion("jwtrp")},
            basic("rp", RP_SECRET),
        ),
        "form_secret_and_a_client_assertion": (
            {**form, "client_secret": OTHER_SECRET, **client_assertion("jwtrp")},
            {},
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "basic_and_wrong_form_secret",
        "basic_and_another_clients_form_credentials",
        "basic_and_a_client_assertion",
        "form_secret_and_a_client_assertion",
    ],
)
def test_client_credentials_sent_two_ways_are_refused_at_the_token_endpoint(
    oidc_app: Flask, case: str
) -> None:
    browser = Browser(oidc_app.test_client())
    authorization = browser.signed_in_code()
    form, headers = _two_ways(authorization.code, authorization.verifier)[case]
    refused = browser.client.post("/token", data=form, headers=headers)
    body = _json_error(refused, 400, "invalid_request")
    assert "one way" in body["error_description"]
    entry = _last(oidc_app, "oidc.token")
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_request"
    # Refused before any grant looked at it: the code is still good, with one method
    # (naming the client in the form beside Basic credentials is still one method).
    again = browser.redeem(authorization, client_id="rp")
    assert again.status_code == 200, again.get_data(as_text=True)


def test_client_credentials_sent_two_ways_are_refused_at_revocation(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    tokens = _tokens(browser)
    refused = browser.client.post(
        "/revoke",
        data={"token": tokens["access_token"], "client_id": "other", "client_secret": "wrong"},
        headers=basic("rp", RP_SECRET),
    )
    body = _json_error(refused, 400, "invalid_request")
    assert "one way" in body["error_description"]
    entry = _last(oidc_app, "oidc.revocation")
    assert entry.outcome == "failure" and entry.details["reason"] == "invalid_request"
    assert _userinfo_status(browser, tokens["access_token"]) == 200  # nothing revoked


# RFC 6749 §3.2: a token request's parameters are in the body. The grants read a
# parameter from the URL as readily as from the form, so the URL could otherwise
# override what the duplicate checks see.


def test_parameters_in_the_token_endpoints_url_are_refused(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    authorization = browser.signed_in_code()
    form = {
        "grant_type": "authorization_code",
        "code": authorization.code,
        "redirect_uri": "https://evil.example/x",
        "code_verifier": authorization.verifier or "",
    }
    auth = basic("rp", RP_SECRET)
    for query in (f"redirect_uri={REDIRECT}", "client_id=public", "grant_type=refresh_token"):
        refused = browser.client.post(f"/token?{query}", data=form, headers=auth)
        body = _json_error(refused, 400, "invalid_request")
        assert "URL" in body["error_description"]
        assert _last(oidc_app, "oidc.token").details["reason"] == "invalid_request"
    # None of them spent the code.
    good = browser.client.post("/token", data={**form, "redirect_uri": REDIRECT}, headers=auth)
    assert good.status_code == 200, good.get_data(as_text=True)


def test_parameters_in_the_revocation_url_are_refused(oidc_app: Flask) -> None:
    public = Browser(oidc_app.test_client(), client_id="public", redirect_uri=LOOPBACK_REDIRECT)
    authorization = public.signed_in_code()
    tokens = public.redeem(authorization, auth="none").get_json()
    refused = public.client.post("/revoke?client_id=public", data={"token": tokens["access_token"]})
    body = _json_error(refused, 400, "invalid_request")
    assert "URL" in body["error_description"]
    assert _last(oidc_app, "oidc.revocation").details["reason"] == "invalid_request"
    assert _userinfo_status(public, tokens["access_token"]) == 200  # nothing revoked
    # In the body, as RFC 7009 §2.1 sends it, the same revocation is done.
    done = public.client.post(
        "/revoke", data={"token": tokens["access_token"], "client_id": "public"}
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    assert _userinfo_status(public, tokens["access_token"]) == 401


def test_a_repeated_parameter_at_revocation_is_refused(oidc_app: Flask) -> None:
    browser = Browser(oidc_app.test_client())
    tokens = _tokens(browser)
    refused = browser.client.post(
        "/revoke",
        data=MultiDict([("token", "not-a-token"), ("token", tokens["access_token"])]),
        headers=basic("rp", RP_SECRET),
    )
    body = _json_error(refused, 400, "invalid_request")
    assert body["error_description"] == "token is sent more than once."
    assert _last(oidc_app, "oidc.revocation").details["reason"] == "invalid_request"
    assert _userinfo_status(browser, tokens["access_token"]) == 200
