"""The card sessions an agent keeps, written down so that the next agent can end them.

An agent that stops reports every card session it keeps as ended (`Agent.stop`). One
that crashes, is killed or loses power cannot: its card sessions were in memory only, so
a card taken out afterwards would end nothing and the sessions would stay open for
whoever uses the workstation next. So the agent keeps the list in a file of the user's
own (mode 0600) whenever it changes, and an agent starting finds what the last one left
there and reports each of those sessions ended, as if its card had been taken out.

The file holds the card session references, which are bearer references to someone's
session: whoever reads one can end that session, nothing more (the broker keeps only a
hash of each). It is written whole, to a temporary file then renamed over the old one,
so a crash mid-write leaves the last complete list. A file that cannot be written or read
is logged and never stops the agent: the card lock works as before while it runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from careid_agent.errors import InvalidCardSessionError
from careid_agent.sessions import CardSession, check_card_session

log = logging.getLogger(__name__)

#: A file larger than this was not written by an agent: read nothing from it.
MAX_BYTES = 1 << 20


class SessionJournal:
    """The kept card sessions, in one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, sessions: Sequence[CardSession]) -> None:
        """Write these sessions as the whole list (none: remove the file)."""
        try:
            if not sessions:
                self.path.unlink(missing_ok=True)
                return
            body = json.dumps(
                [
                    {
                        "origin": s.origin,
                        "insertionId": s.insertion_id,
                        "reader": s.reader,
                        "cardSession": s.card_session,
                    }
                    for s in sessions
                ]
            ).encode("utf-8")
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = self.path.with_name(self.path.name + ".tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(body)
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

    def take(self) -> list[CardSession]:
        """The sessions a previous agent left, and the file removed; [] if none."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the card sessions left in %s: %s", self.path, exc)
            return []
        self.save([])
        if len(raw) > MAX_BYTES:
            log.warning("%s is too large to be the agent's: ignored", self.path)
            return []
        try:
            items = json.loads(raw)
        except ValueError:
            log.warning("%s is not the agent's (not JSON): ignored", self.path)
            return []
        return [s for s in map(_session, items if isinstance(items, list) else []) if s]


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
