"""Checks on the shape of a request before authlib reads it, and the guard for the
refusals authlib cannot word.

RFC 6749 §3.1 and §3.2: no parameter the endpoint knows more than once (others are
ignored, however often sent), at the authorization endpoint and the token endpoint
alike; the token endpoint's parameters in the form body. §2.3: a
client authenticates one way per request. authlib takes the first of a repeated value,
reads the URL's query as readily as the body, and tries each client authentication
method until one works; so these are refused first.

authlib 1.9 will not build an `OAuth2Error` whose description holds a character outside
RFC 6749 §5.2's set (%x20-21 / %x23-5B / %x5D-7E); some of its descriptions repeat what
the request sent (a redirect URI, a response_type, a JOSE header's alg or kid), so such
a request raises `ValueError` instead of being refused. `refusing_unworded` turns that
into the endpoint's own refusal, with fixed text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from authlib.oauth2 import OAuth2Error
from flask import request as flask_request

FORM = "application/x-www-form-urlencoded"

#: The parameters an authorization request may carry (RFC 6749 §4.1.1, RFC 7636 §4.3,
#: OIDC Core §3.1.2.1 and §6): a repeated one is refused, naming it; any other is ignored.
AUTHORIZATION_PARAMETERS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "prompt",
        "max_age",
        "acr_values",
        "response_mode",
        "display",
        "ui_locales",
        "claims_locales",
        "id_token_hint",
        "login_hint",
        "claims",
        "request",
        "request_uri",
        "registration",
        "code_challenge",
        "code_challenge_method",
    }
)

#: Likewise at the token endpoint (RFC 6749 §4.1.3, §6, RFC 7636 §4.5, RFC 7523 §2.2)
#: and the revocation endpoint (RFC 7009 §2.1).
CLIENT_REQUEST_PARAMETERS = frozenset(
    {
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "token",
        "token_type_hint",
    }
)


def repeated_parameter(lists: Iterable[tuple[str, list[str]]], known: frozenset[str]) -> str | None:
    """The refusal's description when a parameter the endpoint knows is sent more than
    once, else None: unrecognised parameters are ignored, however often sent (RFC 6749
    §3.1, §3.2), and so never repeated back."""
    for name, values in lists:
        if name in known and len(values) > 1:
            return f"{name} is sent more than once."
    return None


def malformed_client_request(*, token_endpoint: bool) -> str | None:
    """What is wrong with the current /token or /revoke request's shape, if anything.

    RFC 6749 §4.1.3 and §6: a token request is a form-encoded body with a grant_type;
    §3.2: nothing in the URL's query, no parameter more than once; §2.3: one client
    authentication method. authlib would answer the first two unsupported_grant_type,
    let the query override the body, pick one of a repeated parameter's values and
    take the first method that works, ignoring the rest (a wrong secret beside a right
    one, or another client's credentials). A revocation that is not a form has no
    token, which `StoreRevocation` says.
    """
    if token_endpoint and flask_request.mimetype != FORM:
        return "Send the token request as an application/x-www-form-urlencoded form."
    if flask_request.args:
        return "Send the parameters in the request body, not in the URL (RFC 6749 section 3.2)."
    form = flask_request.form
    repeated = repeated_parameter(form.lists(), CLIENT_REQUEST_PARAMETERS)
    if repeated is not None:
        return repeated
    if len(_client_auth_methods()) > 1:
        return (
            "Send the client's credentials one way only: HTTP Basic in the Authorization"
            " header, client_secret in the form, or a client_assertion (RFC 6749"
            " section 2.3)."
        )
    if token_endpoint and not form.get("grant_type"):
        return "Missing 'grant_type': send authorization_code or refresh_token."
    return None


def _client_auth_methods() -> list[str]:
    """The client authentication methods the current request uses.

    A client_id alone authenticates nothing (a public client, or Basic credentials
    with the client named in the form too), and neither does an Authorization header
    of another scheme than Basic: as at /api/v1/token (`admin/api_auth.py`).
    """
    used = []
    scheme = flask_request.headers.get("Authorization", "").partition(" ")[0]
    if scheme.lower() == "basic":
        used.append("client_secret_basic")
    form = flask_request.form
    if "client_secret" in form:
        used.append("client_secret_post")
    if "client_assertion" in form:
        used.append("client_assertion")
    return used


_OAUTH2_ERROR_INIT = OAuth2Error.__init__.__code__


def unworded(exc: ValueError) -> bool:
    """Whether `exc` is authlib refusing to build an OAuth2Error over its description.

    Told by where it was raised (the error's own constructor), not by its wording; a
    ValueError from anywhere else is a fault and goes on as one.
    """
    traceback = exc.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code is _OAUTH2_ERROR_INIT


@contextmanager
def refusing_unworded(refusal: Callable[[], OAuth2Error]) -> Iterator[None]:
    """Raise `refusal()` where authlib could not word its own refusal of the request."""
    try:
        yield
    except ValueError as exc:
        if not unworded(exc):
            raise
        raise refusal() from exc
