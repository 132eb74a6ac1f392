"""Server-side sessions: the browser holds only a random id; who is signed in lives here.

Keeping the sessions on the server is what makes back-channel logout work: when the OP
says "session `sid` of user `sub` has ended", the webmail can find every local session
that came from it and end them, whatever cookies the browsers still hold.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum, unique
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Role:
    """One entry of `nhsid_nrbac_roles` (NHS CIS2 national RBAC)."""

    role_code: str
    role_name: str
    org_code: str
    person_roleid: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedInUser:
    """Who signed in, as the OP vouched for them; kept with the local session."""

    sub: str
    op_sid: str | None
    name: str
    email: str | None
    uuid: str | None
    acr: str | None
    amr: tuple[str, ...]
    roles: tuple[Role, ...]
    signed_in_at: datetime
    # Needed as the id_token_hint at sign-out; never logged or shown.
    id_token: str = field(repr=False)
    # The role the person chose at sign-in (the `selectedrole` scope), if any.
    selected_roleid: str | None = None


@unique
class SessionState(StrEnum):
    """What `/session-status` reports to the page's script."""

    SIGNED_OUT = "signed_out"
    SIGNED_IN = "signed_in"
    ENDED = "ended"  # ended by the OP (back-channel logout) while the browser was away


@dataclass(kw_only=True, slots=True)
class _Record:
    created: datetime
    touched: datetime
    data: dict[str, Any] = field(default_factory=dict)
    user: SignedInUser | None = None
    ended: bool = False


def new_session_id() -> str:
    """32 bytes from the OS CSPRNG, URL-safe: the only thing the cookie carries."""
    return secrets.token_urlsafe(32)


def looks_like_session_id(value: str) -> bool:
    """Cheap shape check before a lookup, so junk cookies cost nothing."""
    return 40 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


class SessionStore:
    """Thread-safe in-memory sessions with idle and absolute expiry (one process)."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        idle_timeout: timedelta,
        absolute_timeout: timedelta,
        max_sessions: int = 10_000,
    ) -> None:
        self._clock = clock
        self._idle = idle_timeout
        self._absolute = absolute_timeout
        self._max = max_sessions
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def create(self) -> str:
        """A new empty session; its id."""
        now = self._clock()
        sid = new_session_id()
        with self._lock:
            self._make_room(now)
            self._records[sid] = _Record(created=now, touched=now)
        return sid

    def load(self, sid: str, *, touch: bool = True) -> dict[str, Any] | None:
        """A copy of the session's data, or None when unknown or expired."""
        now = self._clock()
        with self._lock:
            record = self._live(sid, now)
            if record is None:
                return None
            if touch:
                record.touched = now
            return dict(record.data)

    def save(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Replace the session's data; False when it no longer exists."""
        now = self._clock()
        with self._lock:
            record = self._live(sid, now)
            if record is None:
                return False
            record.data = dict(data)
            record.touched = now
            return True

    def rotate(self, sid: str | None) -> str:
        """Move a session to a fresh id (at sign-in and sign-out, against fixation)."""
        now = self._clock()
        new_sid = new_session_id()
        with self._lock:
            old = self._records.pop(sid, None) if sid is not None else None
            if old is None or self._expired(old, now):
                self._make_room(now)
                old = _Record(created=now, touched=now)
            old.touched = now
            self._records[new_sid] = old
        return new_sid

    def delete(self, sid: str) -> None:
        """Forget a session entirely."""
        with self._lock:
            self._records.pop(sid, None)

    def sign_in(self, sid: str, user: SignedInUser) -> None:
        """Attach the signed-in user to a session (which must exist)."""
        now = self._clock()
        with self._lock:
            record = self._live(sid, now)
            if record is None:
                raise KeyError("no such session")
            record.user = user
            record.ended = False
            record.touched = now

    def sign_out(self, sid: str) -> SignedInUser | None:
        """Detach the user (local sign-out); who it was, for the id_token_hint."""
        with self._lock:
            record = self._records.get(sid)
            if record is None:
                return None
            user, record.user, record.ended = record.user, None, False
            return user

    def user(self, sid: str | None) -> SignedInUser | None:
        """The signed-in user of a live session, if any."""
        if sid is None:
            return None
        with self._lock:
            record = self._live(sid, self._clock())
            return record.user if record is not None else None

    def state(self, sid: str | None) -> SessionState:
        """Signed in, ended by the OP, or signed out (also: unknown or expired)."""
        if sid is None:
            return SessionState.SIGNED_OUT
        with self._lock:
            record = self._live(sid, self._clock())
            if record is None:
                return SessionState.SIGNED_OUT
            if record.user is not None:
                return SessionState.SIGNED_IN
            return SessionState.ENDED if record.ended else SessionState.SIGNED_OUT

    def end_for_op_session(self, *, op_sid: str | None, sub: str | None) -> int:
        """End every session the OP's logout names; how many were ended.

        Back-Channel Logout §2.7: with `sid`, the sessions of that OP session (and of
        that `sub`, when the token names one too); with only `sub`, all of the user's.
        """
        if op_sid is None and sub is None:
            return 0
        ended = 0
        with self._lock:
            for record in self._records.values():
                user = record.user
                if user is None:
                    continue
                if op_sid is not None and user.op_sid != op_sid:
                    continue
                if sub is not None and user.sub != sub:
                    continue
                record.user = None
                record.ended = True
                ended += 1
        return ended

    def _expired(self, record: _Record, now: datetime) -> bool:
        return now - record.touched > self._idle or now - record.created > self._absolute

    def _live(self, sid: str, now: datetime) -> _Record | None:
        record = self._records.get(sid)
        if record is not None and self._expired(record, now):
            del self._records[sid]
            return None
        return record

    def _make_room(self, now: datetime) -> None:
        # Called with the lock held. Expired sessions go first; if the store is still
        # full, the least recently used one makes way (a flood of anonymous visitors
        # must not grow memory without bound).
        if len(self._records) < self._max:
            return
        for sid in [s for s, r in self._records.items() if self._expired(r, now)]:
            del self._records[sid]
        while len(self._records) >= self._max:
            oldest = min(self._records, key=lambda s: self._records[s].touched)
            del self._records[oldest]
