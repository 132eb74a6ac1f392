"""The webmail's pages and endpoints: thin views over the provider and the session store."""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, redirect, render_template, request, session
from flask.typing import ResponseReturnValue
from flask.wrappers import Response

from careid_devkit.codes import DevkitCode, message_for
from careid_devkit.webmail.config import ACR_ANY_CARD, ACR_CARD
from careid_devkit.webmail.cookie_sessions import ServerSession
from careid_devkit.webmail.errors import LogoutTokenError, SignInError, WebmailError
from careid_devkit.webmail.identity import acr_in_words, user_from_claims
from careid_devkit.webmail.services import STATUS_PATH, current_webmail
from careid_devkit.webmail.sessions import SessionState

log = logging.getLogger(__name__)

bp = Blueprint("webmail", __name__)

CSRF_KEY = "webmail_csrf"
NOTICE_KEY = "webmail_notice"
NOTICES = {
    "signed_out": "You have signed out of the webmail and of the sign-in service.",
    "signed_out_local": (
        "You have signed out of the webmail. The sign-in service could not be told: close"
        " the browser to be sure you are signed out everywhere."
    ),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class InboxRow:
    """A made-up message for the demo inbox."""

    sender: str
    subject: str
    received: str
    unread: bool


DEMO_INBOX = (
    InboxRow(sender="Ward 7 Rota", subject="Rota for next week", received="09:12", unread=True),
    InboxRow(
        sender="Pharmacy", subject="Controlled drugs audit reminder", received="08:47", unread=True
    ),
    InboxRow(
        sender="IT Service Desk", subject="Smartcard reader upgrade", received="Mon", unread=False
    ),
    InboxRow(
        sender="Learning Team", subject="Mandatory training due", received="Fri", unread=False
    ),
)


def _session() -> ServerSession:
    current = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, ServerSession):
        raise RuntimeError("the webmail needs its server-side session interface")
    return current


@bp.app_errorhandler(WebmailError)
def _webmail_error(error: WebmailError) -> ResponseReturnValue:
    # The detail is for whoever runs the demo; the page shows the stable code and message.
    log.warning("%s: %s", error.code, error.detail)
    return (
        render_template("error.html", code=error.code, message=error.message),
        error.status,
    )


@bp.get("/")
def home() -> ResponseReturnValue:
    svc = current_webmail()
    current = _session()
    notice = current.pop(NOTICE_KEY, None)
    if "state" in request.args:
        try:
            if svc.provider.logout_returned():
                notice = "signed_out"
        except WebmailError as exc:
            log.warning("could not check the logout response: %s", exc.detail)
    state = svc.store.state(current.sid)
    user = svc.store.user(current.sid) if state is SessionState.SIGNED_IN else None
    csrf = _csrf_token(current) if user is not None else None
    return render_template(
        "home.html",
        user=user,
        ended=state is SessionState.ENDED,
        notice=NOTICES.get(notice or ""),
        acr_words=acr_in_words(user.acr) if user else None,
        inbox=DEMO_INBOX,
        csrf_token=csrf,
        status_url=STATUS_PATH,
        poll_seconds=svc.config.status_poll_seconds,
    )


@bp.get("/login")
def login() -> ResponseReturnValue:
    svc = current_webmail()
    base = urlsplit(svc.config.base_url)
    if request.host != base.netloc:
        # The callback comes back to base_url: start there, or the state would be held
        # under another host's cookie and the sign-in could not finish.
        query = request.query_string.decode("ascii", "replace")
        return redirect(f"{svc.config.base_url}/login" + (f"?{query}" if query else ""))
    acr_values = ACR_ANY_CARD if request.args.get("acr") == ACR_ANY_CARD else None
    return svc.provider.start_sign_in(acr_values=acr_values)


@bp.get("/callback")
def callback() -> ResponseReturnValue:
    svc = current_webmail()
    result = svc.provider.finish_sign_in()
    user = user_from_claims(result.claims, id_token=result.id_token, now=svc.clock())
    if result.requested_acr == ACR_ANY_CARD and user.acr != ACR_CARD:
        raise SignInError(
            f"asked for {ACR_ANY_CARD} but the OP answered acr={user.acr!r}",
            code=DevkitCode.DEVKIT_WEBMAIL_ASSURANCE_TOO_LOW,
        )
    current = _session()
    # A fresh id at sign-in: an id planted in the browser beforehand is worth nothing.
    current.adopt(svc.store.rotate(current.sid))
    assert current.sid is not None  # noqa: S101 - adopt() just set it
    svc.store.sign_in(current.sid, user)
    current[CSRF_KEY] = secrets.token_urlsafe(32)
    log.info("signed in sub=%s acr=%s", user.sub, user.acr)
    return redirect("/")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    svc = current_webmail()
    current = _session()
    expected = current.get(CSRF_KEY)
    offered = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, offered):
        return (
            render_template(
                "error.html",
                code=DevkitCode.CSRF_INVALID,
                message=message_for(DevkitCode.CSRF_INVALID),
            ),
            400,
        )
    user = svc.store.sign_out(current.sid) if current.sid else None
    current.clear()
    current.adopt(svc.store.rotate(current.sid))
    if user is None:
        return redirect("/")
    log.info("signed out sub=%s", user.sub)
    try:
        if svc.provider.has_end_session():
            return svc.provider.logout_redirect(id_token_hint=user.id_token)
    except WebmailError as exc:
        log.warning("RP-initiated logout not possible: %s", exc.detail)
    current[NOTICE_KEY] = "signed_out_local"
    return redirect("/")


@bp.get(STATUS_PATH)
def session_status() -> ResponseReturnValue:
    svc = current_webmail()
    return jsonify(state=svc.store.state(_session().sid).value)


@bp.post("/backchannel-logout")
def backchannel_logout() -> ResponseReturnValue:
    svc = current_webmail()
    if request.mimetype != "application/x-www-form-urlencoded":
        return _logout_refused("the request is not a form post")
    token = request.form.get("logout_token", "")
    try:
        logout = svc.logout_tokens.validate(token)
    except LogoutTokenError as exc:
        return _logout_refused(exc.detail or "")
    except WebmailError as exc:
        # Our side could not check the token (the OP's keys are unreachable): not the
        # sender's fault, so not a 400; the OP will retry.
        log.warning("back-channel logout not checked: %s", exc.detail)
        response = jsonify(error="temporarily_unavailable", error_description=exc.message)
        response.status_code = 503
        return _no_store(response)
    ended = svc.store.end_for_op_session(op_sid=logout.sid, sub=logout.sub)
    log.info("back-channel logout sid=%s sub=%s ended %d session(s)", logout.sid, logout.sub, ended)
    return _no_store(Response(status=200))


def _logout_refused(reason: str) -> Response:
    # Back-Channel Logout §2.8: 400 with an OAuth-style error body.
    code = DevkitCode.DEVKIT_WEBMAIL_LOGOUT_TOKEN_INVALID
    log.warning("%s: back-channel logout refused: %s", code, reason)
    response = jsonify(
        error="invalid_request",
        error_description=message_for(code),
    )
    response.status_code = 400
    return _no_store(response)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _csrf_token(current: ServerSession) -> str:
    token = current.get(CSRF_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        current[CSRF_KEY] = token
    return token
