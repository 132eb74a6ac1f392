"""The browser's sign-in cookie: which session in the store this browser holds.

The cookie holds the session id signed with the broker's secret key, never the bare
id, so a leaked id (in logs, or a database copy) is not enough to act as the user.
Relying parties never see it: their `sid` claim is derived from it. Every sign-in makes
a new session and a new cookie (and ends the one before), so an id planted before
sign-in is worthless after.
The cookie is HttpOnly, SameSite=Lax, and outside development `Secure` with the
`__Host-` prefix (no Domain, Path=/, HTTPS only).

The sessions themselves (expiry, ending, back-channel logout) are the `SigninSessions`
service's (`current_broker().sessions`); this module only reads and writes the cookie.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from flask import Flask, g, request, session
from flask.wrappers import Response
from itsdangerous import BadSignature, URLSafeSerializer

from careid_broker.signin.sessions import SigninBinding, SigninDecision
from careid_broker.store import EndedSession, EndReason, NewSession, SessionRecord
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import rotate_csrf

log = logging.getLogger(__name__)

COOKIE_BASENAME = "careid-signin"
_SALT = "careid.signin-cookie"
_MAX_COOKIE_LENGTH = 512

_CURRENT = "careid_signin_current"  # g key: the SessionRecord (or None) for this request
_COOKIE_OP = "careid_signin_cookie"  # g key: _CookieOp to apply to the response


@dataclass(frozen=True, kw_only=True)
class _CookieOp:
    value: str | None  # None: delete the cookie


def cookie_name() -> str:
    """The sign-in cookie's name (`__Host-` prefixed when cookies are Secure)."""
    secure = current_broker().config.broker.secure_cookies
    return f"__Host-{COOKIE_BASENAME}" if secure else COOKIE_BASENAME


def _serializer() -> URLSafeSerializer:
    settings = current_broker().config.broker
    return _serializer_for((*settings.previous_secret_keys, settings.secret_key))


@lru_cache(maxsize=8)  # one per key set: a process has one broker (tests a few)
def _serializer_for(keys: tuple[str, ...]) -> URLSafeSerializer:
    # itsdangerous signs with the last key and accepts any of them.
    return URLSafeSerializer(list(keys), salt=_SALT)


def _sid_from_cookie() -> str | None:
    raw = request.cookies.get(cookie_name())
    if not raw or len(raw) > _MAX_COOKIE_LENGTH:
        return None
    try:
        sid = _serializer().loads(raw)
    except BadSignature:
        log.info("ignoring a sign-in cookie with a bad signature")
        return None
    return sid if isinstance(sid, str) and sid else None


def current_signin() -> SessionRecord | None:
    """The browser's active, unexpired sign-in session, or None (cookie cleared)."""
    if _CURRENT in g:
        current: SessionRecord | None = g.get(_CURRENT)
        return current
    record: SessionRecord | None = None
    sid = _sid_from_cookie()
    if sid is not None:
        record = current_broker().sessions.find(sid)
        if record is None:
            _set_cookie(None)
    setattr(g, _CURRENT, record)
    return record


#: Where the browser's session keeps the step a password check began: accepting the
#: AUP (`web.aup`), a registration (`web.registration_pages`).
AUP_STEP_KEY = "careid_aup"
REGISTRATION_STEP_KEY = "careid_register"


def forget_pending_steps() -> None:
    """Drop the AUP and registration steps this browser began, whoever began them: on a
    shared workstation the next person to sign in, or anyone after a sign-out, must not
    carry on with the last person's (their password was checked, not this person's)."""
    session.pop(AUP_STEP_KEY, None)
    session.pop(REGISTRATION_STEP_KEY, None)


def complete_signin(decision: SigninDecision, *, rp: str | None = None) -> NewSession:
    """Start the decided session (ending any this browser had) and point the cookie at it;
    any step another sign-in began in this browser is forgotten.

    The browser changes (cookie, CSRF token, forgotten steps) only once the session is
    committed: called inside a write that then rolls back (the RP's transaction completed
    meanwhile, the store gone before the code), the browser keeps the session it had,
    which is still live, so the person before can still sign out here.
    """
    broker = current_broker()
    new = broker.sessions.complete(decision, SigninBinding(rp=rp, previous_sid=_sid_from_cookie()))

    def point_the_browser_at_it() -> None:
        forget_pending_steps()
        _set_cookie(_serializer().dumps(new.record.sid))
        setattr(g, _CURRENT, new.record)
        rotate_csrf()

    broker.store.after_commit(point_the_browser_at_it)
    return new


def end_signin(
    reason: EndReason | str = EndReason.LOGOUT, *, why: str | None = None
) -> EndedSession | None:
    """End the browser's session (if any), clear its cookie and tell its relying parties
    (`why`, if given, goes into the session's end entry)."""
    sid = _sid_from_cookie()
    current = g.get(_CURRENT)
    if isinstance(current, SessionRecord):
        sid = current.sid
    # Ended first: if the store cannot record it, the cookie, CSRF token and steps stay
    # as they were, so the browser still holds the live session and can sign out again.
    ended = current_broker().sessions.end(sid, reason, why=why) if sid is not None else None
    setattr(g, _CURRENT, None)
    _set_cookie(None)
    rotate_csrf()
    forget_pending_steps()
    return ended


def _set_cookie(value: str | None) -> None:
    setattr(g, _COOKIE_OP, _CookieOp(value=value))


def _write_cookie(response: Response) -> Response:
    op = g.get(_COOKIE_OP)
    if not isinstance(op, _CookieOp):
        return response
    secure = current_broker().config.broker.secure_cookies
    name = cookie_name()
    if op.value is None:
        if name in request.cookies:
            response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="Lax")
    else:
        response.set_cookie(name, op.value, path="/", secure=secure, httponly=True, samesite="Lax")
    response.vary.add("Cookie")
    return response


def init_app(app: Flask) -> None:
    """Write cookie changes made during the request onto its response."""
    app.after_request(_write_cookie)
