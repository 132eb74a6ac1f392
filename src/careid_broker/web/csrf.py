"""CSRF protection for every form post, on by default.

The token is a random value kept in the browser's signed Flask session cookie
(HttpOnly, SameSite=Lax) and echoed in each form's hidden `csrf_token` field (or an
`X-CSRF-Token` header for same-origin scripts). A cross-site page can neither read the
cookie nor forge its signature, so it cannot produce a matching pair. The value is
replaced at every sign-in and sign-out, and as soon as a form that carries a password
is accepted (`spends_token`): such a form is good for one submission.

Endpoints that are cross-site or non-browser by design (OAuth's token endpoint, the
authorization endpoint's POST form, back-channel calls) opt out with `@csrf_exempt`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, request, session, url_for
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BuildError

from careid_broker.codes import BrokerCode
from careid_broker.store import Outcome
from careid_broker.web.context import current_broker
from careid_broker.web.errors import error_response, wants_json

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., object])

FIELD_NAME = "csrf_token"
HEADER_NAME = "X-CSRF-Token"
_SESSION_KEY = "csrf"
_EXEMPT_ATTRIBUTE = "_careid_csrf_exempt"
_RESHOW_ATTRIBUTE = "_careid_csrf_reshow"
_SPENDS_ATTRIBUTE = "_careid_csrf_spends"
# Forms posted to an address that has no page of its own: where their page is.
_FORM_PAGES = {
    "login.signout": "login.signout_page",
    "oidc.logout_confirm": "login.signout_page",
    "registration.accept_aup": "registration.card_page",
    "registration.cancel": "registration.start",
    "admin.remove_confirm": "admin.user",
    "admin.check_revocation": "admin.user",
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MAX_TOKEN_LENGTH = 128


def reshow_on_expiry(reshow: Callable[[], Response]) -> Callable[[F], F]:
    """When this form comes back with an expired token, answer with `reshow()`: the
    form again (fresh token, what was typed and the relying party's request kept),
    instead of a page whose only way on is to re-post the stale form."""

    def decorate(view: F) -> F:
        setattr(view, _RESHOW_ATTRIBUTE, reshow)
        return view

    return decorate


def spends_token(view: F) -> F:
    """Mark a form that carries a password as good for one submission.

    The answer to a form POST stays in the browser's history: Back or Reload on it, and
    "resubmit", send the form again, password and token, perhaps by the next person at
    a shared workstation once a refusal's cause (a throttle, a directory outage, a policy
    not yet accepted) has cleared. So the token is replaced the moment this form's is
    accepted, before the view runs: whatever the view answers (a refusal, the policy to
    accept, a redirect) carries the new token, and the form sent again is refused
    `csrf_invalid` (audited, the form shown again with the address but no password)
    before any password is looked at, so it is no attempt either. Answering with a
    redirect to a GET instead would keep this browser's history free of the POST, but
    not stop a copy of the form sent again; the spent token does, whatever the browser
    keeps."""
    setattr(view, _SPENDS_ATTRIBUTE, True)
    return view


def csrf_exempt(view: F) -> F:
    """Mark a view as not needing a CSRF token (the same function is returned)."""
    setattr(view, _EXEMPT_ATTRIBUTE, True)
    return view


def csrf_token() -> str:
    """The token for this browser's forms (created on first use); a Jinja global."""
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = token
    return token


def rotate_csrf() -> None:
    """Replace the token (at sign-in and sign-out, and when a password form is sent)."""
    session[_SESSION_KEY] = secrets.token_urlsafe(32)


def _is_exempt() -> bool:
    if request.endpoint is None:
        return True  # no view will run: routing answers 404/405 itself
    view = current_app.view_functions.get(request.endpoint)
    return view is None or bool(getattr(view, _EXEMPT_ATTRIBUTE, False))


def _check() -> Response | None:
    if request.method in _SAFE_METHODS or _is_exempt():
        return None
    expected = session.get(_SESSION_KEY)
    sent = request.form.get(FIELD_NAME) or request.headers.get(HEADER_NAME) or ""
    if (
        isinstance(expected, str)
        and expected
        and len(sent) <= _MAX_TOKEN_LENGTH
        and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        if getattr(
            current_app.view_functions.get(request.endpoint or ""), _SPENDS_ATTRIBUTE, False
        ):
            rotate_csrf()  # this form is used up, whatever the view answers
        return None
    reason = "missing" if not sent else ("no_session" if not expected else "mismatch")
    current_broker().metrics.csrf_refusals.inc()
    current_broker().audit(
        "csrf.refused",
        outcome=Outcome.FAILURE,
        code=BrokerCode.CSRF_INVALID,
        details={"endpoint": request.endpoint, "reason": reason},
    )
    view = current_app.view_functions.get(request.endpoint or "")
    reshow = getattr(view, _RESHOW_ATTRIBUTE, None)
    if callable(reshow) and not wants_json():
        answer: Response = reshow()
        return answer
    return error_response(BrokerCode.CSRF_INVALID, retry_url=_form_page())


def _form_page() -> str:
    """The page the refused form was on, to fill it in again (a GET, never a re-post)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        adapter.match(request.path, method="GET")
    except HTTPException:
        endpoint = _FORM_PAGES.get(request.endpoint or "", "login.page")
        args = request.view_args or {}
        try:
            return url_for(endpoint, **args)
        except BuildError:
            return url_for("login.page")
    return request.full_path.rstrip("?")


def init_app(app: Flask) -> None:
    """Check every unsafe request before its view; offer `csrf_token()` to templates."""
    app.before_request(_check)
    app.jinja_env.globals["csrf_token"] = csrf_token
