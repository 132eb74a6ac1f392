"""A Flask session interface over `SessionStore`: the cookie holds a random id only.

authlib's client keeps its per-login state (state, nonce, PKCE verifier) in Flask's
`session`; with this interface that state stays on the server too.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.sessions import SessionInterface, SessionMixin
from flask.wrappers import Request, Response
from werkzeug.datastructures import CallbackDict

from careid_devkit.webmail.sessions import SessionStore, looks_like_session_id


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """Flask's `session` for one request; `sid` is None until something is stored."""

    def __init__(self, initial: dict[str, Any] | None, sid: str | None) -> None:
        def on_update(_: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.modified = False
        self.cookie_needed = False

    def adopt(self, sid: str) -> None:
        """Continue under another id (after `SessionStore.rotate`); a new cookie is sent."""
        self.sid = sid
        self.cookie_needed = True
        self.modified = True


class ServerSideSessions(SessionInterface):
    """Load and save `ServerSession`s; set the id cookie only when it changes."""

    def __init__(
        self,
        store: SessionStore,
        *,
        cookie_name: str,
        secure: bool,
        passive_paths: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._cookie_name = cookie_name
        self._secure = secure
        # Requests that read the session without keeping it alive: the page's status
        # poll must not stop an idle session from expiring.
        self._passive_paths = passive_paths

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        cookie = request.cookies.get(self._cookie_name, "")
        if cookie and looks_like_session_id(cookie):
            passive = request.path in self._passive_paths or request.path.startswith("/static/")
            data = self._store.load(cookie, touch=not passive)
            if data is not None:
                return ServerSession(data, cookie)
        return ServerSession(None, None)

    def ensure_sid(self, session: ServerSession) -> str:
        """The session's id, creating the server-side record first if there is none."""
        if session.sid is None:
            session.adopt(self._store.create())
        assert session.sid is not None  # noqa: S101 - adopt() just set it
        return session.sid

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, ServerSession):
            return
        response.vary.add("Cookie")
        if session.sid is None:
            if not (session.modified and dict(session)):
                return  # nothing worth a server-side record
            session.adopt(self._store.create())
        assert session.sid is not None  # noqa: S101 - set just above or by adopt()
        if session.modified and not self._store.save(session.sid, dict(session)):
            # Expired or evicted while the request ran: keep the data under a new id.
            session.adopt(self._store.rotate(None))
            self._store.save(session.sid, dict(session))
        if session.cookie_needed:
            response.set_cookie(
                self._cookie_name,
                session.sid,
                httponly=True,
                secure=self._secure,
                # Lax, not Strict: the OP's redirect back to /callback is a cross-site
                # top-level navigation that must carry the cookie.
                samesite="Lax",
                path="/",
            )
