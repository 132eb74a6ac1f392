"""The card sessions an agent keeps, and the removal notices it owes, written down so
that the next agent can send what this one could not.

An agent that stops reports every card session it keeps as ended (`Agent.stop`). One
that crashes, is killed or loses power cannot: its card sessions were in memory only, so
a card taken out afterwards would end nothing and the sessions would stay open for
whoever uses the workstation next. So the agent keeps in a file of the user's own (mode
0600) both the card sessions of the cards in its readers and every removal notice it
has not yet delivered, whenever either changes. A notice leaves the file only when its
origin took it, or refused it for good (a 4xx other than 408 and 429). An agent that
starts reports ended every session the last one left there for its own origins, and
keeps each in the file until that notice too is delivered.

One agent owns the file while it runs (an exclusive lock beside it): a second agent of
the same user, with other settings, neither takes nor overwrites the first one's
sessions, and keeps none itself (logged). Entries for origins this agent does not serve
are left in the file as they are.

The file holds card session references, which are bearer references to someone's
session: whoever reads one can end that session, nothing more (the broker keeps only a
hash of each). It is written whole, to a temporary file then renamed over the old one,
so a crash mid-write leaves the last complete list. A file that cannot be locked,
written or read is logged and never stops the agent: the card lock works as before while
it runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from careid_agent.errors import InvalidCardSessionError
from careid_agent.sessions import CardSession, check_card_session

log = logging.getLogger(__name__)

#: A file larger than this was not written by an agent: read nothing from it.
MAX_BYTES = 1 << 20

_Key = tuple[str, str]


def _key(session: CardSession) -> _Key:
    return (session.origin, session.card_session)


class SessionJournal:
    """The kept card sessions and the notices owed, in one file this agent owns."""

    def __init__(self, path: Path, *, is_ours: Callable[[str], bool] = lambda origin: True):
        self.path = path
        self._is_ours = is_ours
        self._lock = threading.Lock()
        self._kept: list[CardSession] = []
        self._owed: dict[_Key, CardSession] = {}
        self._others: list[object] = []
        self._owner: IO[bytes] | None = None

    def open(self) -> list[CardSession]:
        """Own the file; the sessions a previous agent left for this agent's origins,
        now owed a notice (and kept in the file until it is delivered). [] when another
        agent owns the file, or it cannot be had: this agent then keeps nothing there."""
        with self._lock:
            if not self._own():
                return []
            items = self._read()
            left: list[CardSession] = []
            for item in items:
                session = _session(item)
                if session is not None and self._is_ours(session.origin):
                    self._owed[_key(session)] = session
                    left.append(session)
                elif session is not None:
                    self._others.append(item)
            self._write()
            return left

    def kept(self, sessions: Sequence[CardSession], released: Iterable[CardSession] = ()) -> None:
        """The card sessions of the cards in the readers now; `released` (their card
        gone) are owed a notice from this moment."""
        with self._lock:
            self._kept = list(sessions)
            self._owed.update((_key(s), s) for s in released)
            self._write()

    def owe(self, sessions: Iterable[CardSession]) -> None:
        """These sessions are owed a notice until `settle`."""
        owed = {_key(s): s for s in sessions}
        if not owed:
            return
        with self._lock:
            self._owed.update(owed)
            self._write()

    def settle(self, session: CardSession) -> None:
        """Its origin took the notice, or refused it for good: nothing more is owed."""
        with self._lock:
            if self._owed.pop(_key(session), None) is not None:
                self._write()

    def close(self) -> None:
        """The agent has stopped: it keeps no card session (each was reported ended or
        is still owed), and lets the file go to the next agent."""
        with self._lock:
            self._kept = []
            self._write()
            if self._owner is not None:
                self._owner.close()  # the lock goes with it
                self._owner = None

    # -- the file --------------------------------------------------------------------

    def _own(self) -> bool:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            owner = open(self.path.with_name(self.path.name + ".lock"), "ab")  # noqa: SIM115
        except OSError as exc:
            log.warning("cannot keep card sessions in %s: %s", self.path, exc.strerror or exc)
            return False
        if not _lock_exclusively(owner):
            owner.close()
            log.warning(
                "another careid-agent keeps its card sessions in %s: this one keeps none"
                " there (set card_sessions_file in its agent.toml)",
                self.path,
            )
            return False
        self._owner = owner
        return True

    def _read(self) -> list[Any]:
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the card sessions left in %s: %s", self.path, exc)
            return []
        if len(raw) > MAX_BYTES:
            log.warning("%s is too large to be the agent's: ignored", self.path)
            return []
        try:
            items = json.loads(raw)
        except ValueError:
            log.warning("%s is not the agent's (not JSON): ignored", self.path)
            return []
        return items if isinstance(items, list) else []

    def _write(self) -> None:
        if self._owner is None:
            return
        ours = {_key(s): s for s in self._kept}
        ours.update(self._owed)
        entries = [*self._others, *(_entry(s) for s in ours.values())]
        try:
            if not entries:
                self.path.unlink(missing_ok=True)
                return
            temporary = self.path.with_name(self.path.name + ".tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(json.dumps(entries).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning(
                "cannot keep the card sessions in %s (%s): should this agent crash, the"
                " next one cannot end them",
                self.path,
                exc.strerror or exc,
            )


def _lock_exclusively(handle: IO[bytes]) -> bool:
    """An exclusive lock on the open file, without waiting; False if another has it."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        import msvcrt  # noqa: PLC0415 - Windows

        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
    except OSError:
        return False
    return True


def _entry(session: CardSession) -> dict[str, str]:
    return {
        "origin": session.origin,
        "insertionId": session.insertion_id,
        "reader": session.reader,
        "cardSession": session.card_session,
    }


def _session(item: object) -> CardSession | None:
    if not isinstance(item, dict):
        return None
    origin, insertion, reader = item.get("origin"), item.get("insertionId"), item.get("reader")
    if not all(isinstance(value, str) for value in (origin, insertion, reader)):
        return None
    try:
        reference = check_card_session(item.get("cardSession"))
    except InvalidCardSessionError:
        return None
    return CardSession(
        origin=str(origin), insertion_id=str(insertion), reader=str(reader), card_session=reference
    )
