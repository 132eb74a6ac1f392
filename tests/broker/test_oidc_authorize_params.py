"""What /authorize keeps of a request, and so what it must refuse before keeping it.

The login transaction carries the request through the sign-in into the store's rows
(`max_age` a 32-bit integer, the rest text). A value the store cannot hold must be
refused to the RP at /authorize, never found out as a 500 after the person has typed
their password. Both backends: PostgreSQL is the stricter (int4, no NUL in text).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from broker_support import broker_of, error_code_of
from flask import Flask
from oidc_support import ISSUER, LOOPBACK_REDIRECT, REDIRECT, Browser, make_oidc_app

from careid_broker.oidc.models import OAuthClient
from careid_broker.web.oidc_authorize import MAX_MAX_AGE


@pytest.fixture
def oidc_app(app_factory: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_oidc_app(app_factory, tmp_path)


@pytest.fixture
def oidc_browser(oidc_app: Flask) -> Browser:
    return Browser(oidc_app.test_client())


def _refused(oidc_app: Flask, browser: Browser, description: str, **params: str) -> None:
    authorization = browser.authorize(**params)
    assert authorization.location.startswith(REDIRECT), authorization.location
    assert authorization.params["error"] == "invalid_request"
    assert authorization.params["error_description"] == description
    assert authorization.params["iss"] == ISSUER
    [entry] = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize", limit=1)
    assert entry.outcome == "failure" and entry.error_code == "oidc_request_invalid"
    assert entry.details["error"] == "invalid_request" and entry.details["redirected"]


@pytest.mark.parametrize(
    "max_age", ["99999999999999999999", str(MAX_MAX_AGE + 1), "-1", "-0", "+5", " 5", "1.5", "٣"]
)
def test_a_max_age_the_store_cannot_keep_is_refused(
    oidc_app: Flask, oidc_browser: Browser, max_age: str
) -> None:
    description = f"max_age must be a whole number of seconds from 0 to {MAX_MAX_AGE}."
    _refused(oidc_app, oidc_browser, description, max_age=max_age)


def test_the_largest_max_age_signs_in(oidc_browser: Browser) -> None:
    assert MAX_MAX_AGE == 2**31 - 1  # PostgreSQL's int4, the column's type
    authorization = oidc_browser.signed_in_code(max_age=str(MAX_MAX_AGE))
    assert oidc_browser.redeem(authorization).status_code == 200
    # Kept, and honoured: the same sign-in is still young enough.
    again = oidc_browser.authorize(max_age=str(MAX_MAX_AGE))
    assert again.response.status_code == 302 and "code" in again.params


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("state", "abc\x00def"),
        ("nonce", "\x00"),
        ("scope", "openid\x1femail"),
        ("acr_values", "AAL1_USERPASS\x7f"),
        ("prompt", "login\x0b"),
        ("login_hint", "alex\x00@nhs.net"),
        ("ui_locales", "en\x1b"),
        ("display", "page\r\n"),
    ],
)
def test_a_control_character_in_a_kept_parameter_is_refused(
    oidc_app: Flask, oidc_browser: Browser, name: str, value: str
) -> None:
    # RFC 6749 Appendix A allows no control character in state or scope, and
    # PostgreSQL cannot store NUL: refused, naming the parameter, before it is kept.
    _refused(
        oidc_app, oidc_browser, f"{name} must not contain control characters.", **{name: value}
    )


@pytest.mark.parametrize("mode", ["form_post", "fragment", "query.jwt"])
def test_a_response_mode_other_than_query_is_refused_not_ignored(
    oidc_app: Flask, oidc_browser: Browser, mode: str
) -> None:
    # Discovery advertises only query: an RP asking for another would wait for a
    # form post or a fragment that never comes. Client and redirect URI are checked,
    # so the refusal goes back to the RP (RFC 6749 §4.1.2.1), in the query.
    _refused(
        oidc_app,
        oidc_browser,
        "response_mode must be query, the only mode this provider supports.",
        response_mode=mode,
    )


def test_response_mode_query_is_accepted(oidc_browser: Browser) -> None:
    authorization = oidc_browser.authorize(response_mode="query")
    assert authorization.location.startswith("/login?")


# RFC 8252 §7.3: a native app listens on whichever loopback port it could get.


@pytest.mark.parametrize(
    ("client_id", "redirect_uri", "allowed"),
    [
        ("public", "http://127.0.0.1:8765/cb", True),
        ("public", "http://127.0.0.1:50123/cb", True),
        ("public", "http://127.0.0.1/cb", True),
        ("public", "http://[::1]:50123/cb", True),
        # Everything but the port must match exactly.
        ("public", "http://127.0.0.1:50123/cb/", False),
        ("public", "http://127.0.0.1:50123/cb?x=1", False),
        ("public", "http://127.0.0.1:50123/cb#x", False),
        ("public", "https://127.0.0.1:50123/cb", False),
        ("public", "http://[::1]:50123/CB", False),
        ("public", "http://127.0.0.2:50123/cb", False),
        ("public", "http://127.0.0.1:50123@evil.example/cb", False),
        ("public", "http://evil.example@127.0.0.1:50123/cb", False),
        ("public", "http://127.0.0.1:99999/cb", False),
        ("public", "http://127.0.0.1:0/cb", False),
        ("public", "http://127.0.0.1:+5/cb", False),
        ("public", "http://[::1]:50123/cb".replace("[::1]", "[0:0:0:0:0:0:0:1]"), False),
        # Never a name (RFC 8252 §8.3), never a confidential client.
        ("public", "http://localhost:50123/cb", False),
        ("public", "http://localhost:8765/cb", True),
        ("nopkce", "http://127.0.0.1:50123/cb", False),
        ("nopkce", "http://127.0.0.1:8765/cb", True),
    ],
)
def test_a_public_clients_loopback_redirect_may_use_any_port(
    oidc_app: Flask, client_id: str, redirect_uri: str, allowed: bool
) -> None:
    record = broker_of(oidc_app).oidc.clients.get(client_id)
    assert record is not None
    assert OAuthClient(record).check_redirect_uri(redirect_uri) is allowed


def test_a_native_app_signs_in_on_the_port_it_got(oidc_app: Flask) -> None:
    native = Browser(oidc_app.test_client(), client_id="public")
    native.redirect_uri = "http://127.0.0.1:50123/cb"
    authorization = native.signed_in_code()
    assert authorization.location.startswith("http://127.0.0.1:50123/cb?")
    # The code is bound to the URI the request used, port included.
    elsewhere = native.redeem(authorization, auth="none", redirect_uri=LOOPBACK_REDIRECT)
    assert elsewhere.status_code == 400
    native = Browser(oidc_app.test_client(), client_id="public")
    native.redirect_uri = "http://127.0.0.1:50124/cb"
    tokens = native.redeem(native.signed_in_code(), auth="none")
    assert tokens.status_code == 200, tokens.get_data(as_text=True)


def _cookieless_post(oidc_app: Flask, path: str, form: dict[str, str]) -> Any:
    """How a browser sends another site's form: without the broker's Lax cookies."""
    return oidc_app.test_client().post(path, data=form)


def test_a_cookieless_authorization_post_goes_on_by_get_and_signs_in_once(
    oidc_app: Flask, oidc_browser: Browser
) -> None:
    """Another site's form POST arrives without the broker's cookies: carried on by GET
    (which a browser sends them with), the signed-in person gets single sign-on there."""
    first = oidc_browser.sign_in(oidc_browser.authorize())
    assert first.location.startswith(REDIRECT)
    form = {
        "response_type": "code",
        "client_id": "rp",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s-2",
        "nonce": "n-2",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    posted = _cookieless_post(oidc_app, "/authorize", form)
    assert posted.status_code == 303
    assert "Set-Cookie" not in posted.headers and posted.headers["Cache-Control"] == "no-store"
    path, _, query = posted.headers["Location"].partition("?")
    assert path == "/authorize" and parse_qsl(query) == list(form.items())
    followed = oidc_browser.client.get(posted.headers["Location"])
    assert followed.status_code in (302, 303)
    answer = parse_qs(urlsplit(followed.headers["Location"]).query)
    assert answer["state"] == ["s-2"] and "code" in answer  # no login page: single sign-on


def test_a_cookieless_post_too_long_for_an_address_is_not_carried_on(oidc_app: Flask) -> None:
    """An authorization request is then answered as it came (here: to the login page);
    a sign-out is refused, never answered as a sign-out it could not see."""
    huge = {"client_id": "rp", "response_type": "code", "login_hint": "x" * 9000}
    authorization = _cookieless_post(oidc_app, "/authorize", huge)
    assert authorization.status_code != 303 or not authorization.headers["Location"].startswith(
        "/authorize"
    )
    logout = _cookieless_post(
        oidc_app, "/logout", {"post_logout_redirect_uri": REDIRECT, "state": "x" * 9000}
    )
    assert logout.status_code == 400
    assert "Location" not in logout.headers
    assert "oidc_logout_invalid" in logout.get_data(as_text=True)
    entry = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.logout", limit=1)
    assert entry and entry[0].error_code == "oidc_logout_invalid"


# Characters an OAuth error may not repeat (RFC 6749 §5.2: error_description is
# %x20-21 / %x23-5B / %x5D-7E) in what the request sent: a refusal, never a 500.


def _request(**overrides: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "rp",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        **overrides,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("redirect_uri", REDIRECT + "\\x"),
        ("redirect_uri", REDIRECT + '"'),
        ("redirect_uri", "https://rp.example.test/callbäck"),
        ("response_type", 'code"'),
        ("response_type", "cöde"),
    ],
)
def test_a_value_an_error_may_not_repeat_gets_the_error_page(
    oidc_app: Flask, name: str, value: str
) -> None:
    # Neither is a request whose redirect URI can be trusted: the page, not the RP.
    response = oidc_app.test_client().get("/authorize", query_string=_request(**{name: value}))
    assert response.status_code == 400 and "Location" not in response.headers
    assert error_code_of(response) == "oidc_request_invalid"
    assert value not in response.get_data(as_text=True)
    [entry] = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize", limit=1)
    assert entry.outcome == "failure" and entry.error_code == "oidc_request_invalid"
    assert entry.details["error"] == "invalid_request" and not entry.details["redirected"]


# RFC 6749 §3.1: no parameter more than once. Taking one of the values would, for
# prompt=none&prompt=login, answer by single sign-on a request that also asks for a
# fresh sign-in.


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("nonce", ["a", "b"]),
        ("prompt", ["none", "login"]),
        ("max_age", ["0", "99999"]),
        ("acr_values", ["AAL3_ANY", "AAL1_USERPASS"]),
        ("response_mode", ["query", "fragment"]),
        ("login_hint", ["alex.morgan@nhs.net", "kim.taylor@nhs.net"]),
        ("id_token_hint", ["a", "b"]),
    ],
)
def test_a_repeated_parameter_is_refused_to_the_rp(
    oidc_app: Flask, oidc_browser: Browser, name: str, values: list[str]
) -> None:
    oidc_browser.signed_in_code()
    query = [*_request().items(), *((name, value) for value in values)]
    response = oidc_browser.client.get("/authorize", query_string=query)
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?"), location
    params = dict(parse_qsl(urlsplit(location).query))
    assert "code" not in params
    assert params["error"] == "invalid_request"
    assert params["error_description"] == f"{name} is sent more than once."
    assert params["state"] == "s" and params["iss"] == ISSUER
    [entry] = broker_of(oidc_app).repos.audit.list_recent(event_prefix="oidc.authorize", limit=1)
    assert entry.outcome == "failure" and entry.error_code == "oidc_request_invalid"
    assert entry.details["error"] == "invalid_request" and entry.details["redirected"]


def test_a_repeated_parameter_the_endpoint_does_not_know_is_ignored(
    oidc_browser: Browser,
) -> None:
    """RFC 6749 §3.1: unrecognised parameters are ignored, however often they come
    (RFC 8707's `resource` may be sent more than once)."""
    # Sent once in the query and once in the form of a POST, and twice in a GET.
    response = oidc_browser.client.post("/authorize?x%22y=1", data={**_request(), 'x"y': "2"})
    if response.status_code == 303:  # posted without the broker's cookies
        response = oidc_browser.client.get(response.headers["Location"])
    assert response.headers["Location"].startswith("/login?"), response.headers["Location"]
    query = urlencode(
        [*_request().items(), ("resource", "https://a.test"), ("resource", "https://b.test")]
    )
    again = oidc_browser.client.get(f"/authorize?{query}")
    assert again.headers["Location"].startswith("/login?"), again.headers["Location"]
