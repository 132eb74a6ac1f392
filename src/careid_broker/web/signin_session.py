"""The browser's sign-in session: a cookie naming a session in the store.

The cookie holds the session id signed with the broker's secret key, never the bare
id, so a leaked id (in logs, or a database copy) is not enough to act as the user.
Relying parties never see it: their `sid` claim is derived from it. Every sign-in makes
a new session and a new cookie (and ends the one before), so an id planted before
sign-in is worthless after.
The cookie is HttpOnly, SameSite=Lax, and outside development `Secure` with the
`__Host-` prefix (no Domain, Path=/, HTTPS only).

Sessions end after `session_lifetime` from sign-in or `session_idle` without use; an
ended session is reported to its relying parties (back-channel logout) through the
`session_ended` hook, in the same database transaction as the ending.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from flask import Flask, g, request
from flask.wrappers import Response
from itsdangerous import BadSignature, URLSafeSerializer

from careid_broker.auditing import audit
from careid_broker.directory import MailAccount
from careid_broker.services import services
from careid_broker.store import EndedSession, EndReason, NewSession, Outcome, SessionRecord
from careid_broker.web.csrf import rotate_csrf

log = logging.getLogger(__name__)

COOKIE_BASENAME = "careid-signin"
_SALT = "careid.signin-cookie"
_MAX_COOKIE_LENGTH = 512
# Recording activity costs a database write; once a minute is plenty for idle expiry.
TOUCH_INTERVAL = timedelta(seconds=60)

Method = Literal["pwd", "card"]

_CURRENT = "careid_signin_current"  # g key: the SessionRecord (or None) for this request
_COOKIE_OP = "careid_signin_cookie"  # g key: _CookieOp to apply to the response


@dataclass(frozen=True, kw_only=True)
class _CookieOp:
    value: str | None  # None: delete the cookie


def cookie_name() -> str:
    """The sign-in cookie's name (`__Host-` prefixed when cookies are Secure)."""
    secure = services().config.broker.secure_cookies
    return f"__Host-{COOKIE_BASENAME}" if secure else COOKIE_BASENAME


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(services().config.broker.secret_key, salt=_SALT)


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


def _expired(record: SessionRecord, now: datetime) -> bool:
    settings = services().config.broker
    return (
        now >= record.auth_time + settings.session_lifetime
        or now >= record.last_seen_at + settings.session_idle
    )


def current_signin() -> SessionRecord | None:
    """The browser's active, unexpired sign-in session, or None.

    An expired session is ended here (and its relying parties told). Activity is
    recorded at most once a minute.
    """
    if _CURRENT in g:
        current: SessionRecord | None = g.get(_CURRENT)
        return current
    record: SessionRecord | None = None
    sid = _sid_from_cookie()
    if sid is not None:
        svc = services()
        found = svc.repos.sessions.get(sid)
        now = svc.store.now()
        if found is None or not found.active:
            _set_cookie(None)
        elif _expired(found, now):
            _end(found.sid, EndReason.EXPIRED)
            _set_cookie(None)
        else:
            if now - found.last_seen_at >= TOUCH_INTERVAL:
                svc.repos.sessions.touch(found.sid)
            record = found
    setattr(g, _CURRENT, record)
    return record


def begin_signin(
    account: MailAccount,
    *,
    method: Method,
    acr: str,
    amr: tuple[str, ...] | list[str],
    card_uuid: str | None = None,
    card_session: bool = False,
) -> SessionRecord:
    """Start a new session for the account and point the browser's cookie at it."""
    return begin_signin_session(
        account, method=method, acr=acr, amr=amr, card_uuid=card_uuid, card_session=card_session
    ).record


def begin_signin_session(
    account: MailAccount,
    *,
    method: Method,
    acr: str,
    amr: tuple[str, ...] | list[str],
    card_uuid: str | None = None,
    card_session: bool = False,
) -> NewSession:
    """As `begin_signin`, also returning the card-session id for the agent (card sign-in).

    Any session this browser had is ended first: one browser, one signed-in person.
    """
    if method not in ("pwd", "card"):
        raise ValueError(f"unknown sign-in method {method!r}")
    svc = services()
    previous = _sid_from_cookie()
    if previous is not None:
        _end(previous, EndReason.LOGOUT, why="replaced by a new sign-in")
    sub = svc.repos.subjects.sub_for_account(mail=account.mail, dn=account.dn)
    new = svc.repos.sessions.create(
        sub=sub,
        account_mail=account.mail,
        acr=acr,
        amr=list(amr),
        auth_time=svc.store.now(),
        card_uuid=card_uuid,
        with_card_session=card_session,
    )
    _set_cookie(_serializer().dumps(new.record.sid))
    setattr(g, _CURRENT, new.record)
    rotate_csrf()
    return new


def end_signin(reason: EndReason | str = EndReason.LOGOUT) -> EndedSession | None:
    """End the browser's session (if any), clear its cookie and tell its relying parties."""
    sid = _sid_from_cookie()
    current = g.get(_CURRENT)
    if isinstance(current, SessionRecord):
        sid = current.sid
    setattr(g, _CURRENT, None)
    _set_cookie(None)
    rotate_csrf()
    if sid is None:
        return None
    return _end(sid, reason)


def _end(sid: str, reason: EndReason | str, *, why: str | None = None) -> EndedSession | None:
    svc = services()
    # The transactional outbox: the session ends and its logout deliveries are queued
    # in one transaction, so a crash can never do one without the other.
    with svc.store.transaction():
        ended = svc.repos.sessions.end_session(sid, str(reason))
        if ended is not None and ended.ended_now:
            svc.session_ended(ended)
    if ended is not None and ended.ended_now:
        details: dict[str, object] = {
            "sid": ended.sid,
            "reason": ended.reason,
            "relying_parties": list(ended.relying_parties),
            "tokens_revoked": ended.tokens_revoked,
        }
        if why:
            details["why"] = why
        audit(
            "session.end",
            outcome=Outcome.SUCCESS,
            actor=ended.account_mail,
            subject=ended.account_mail,
            details=details,
        )
    return ended


def _set_cookie(value: str | None) -> None:
    setattr(g, _COOKIE_OP, _CookieOp(value=value))


def _write_cookie(response: Response) -> Response:
    op = g.get(_COOKIE_OP)
    if not isinstance(op, _CookieOp):
        return response
    secure = services().config.broker.secure_cookies
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
