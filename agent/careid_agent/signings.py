"""Which card signed which sign-in, so a card session is kept for that card alone.

`POST /v1/authenticate` answers, besides the token, a signing handle in the response
header `CareId-Signing`: 128 random bits, base64url (22 characters), bound to the
origin that asked and the card insertion (and reader) that signed. The page sends it
back as the `signing` member of `POST /v1/card-sessions`, and the card session is kept
for exactly that insertion. A handle is used once; an unknown, expired or other
origin's handle ends the card session at once. The token itself stays the five fields
of careid-auth:1: a page forwards it to its broker untouched, and brokers refuse
anything more.

Remembering "the card that last signed for this origin" instead would hand one
person's card session to the next person's card when both sign in to one broker at a
shared workstation while the first page is still waiting. Pages older than the handle
send none; for them a card session is kept only when this origin's unclaimed signings
name one card insertion, and ends at once otherwise.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The response header carrying the handle (exposed to the page by CORS).
SIGNING_HEADER = "CareId-Signing"
#: Signings remembered at once: a shared workstation sees a few sign-ins a minute.
MAX_SIGNINGS = 64
#: Seconds a handle stays usable: a registration's confirmation step comes between
#: the signature and the card session, and a person may read it slowly.
SIGNING_MAX_AGE = 30 * 60.0
_HANDLE_BYTES = 16
_HANDLE_RE = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, kw_only=True)
class Signing:
    """One card signature for one origin, not yet claimed by a card session."""

    origin: str
    insertion_id: str
    reader: str
    at: float


class Signings:
    """A bounded, thread-safe table of signing handles (size and age limits)."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_SIGNINGS,
        max_age: float = SIGNING_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._max_age = max_age
        self._clock = clock
        self._table: OrderedDict[str, Signing] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, *, origin: str, insertion_id: str, reader: str) -> str:
        """Remember a signature; the handle the page sends back with its card session."""
        handle = secrets.token_urlsafe(_HANDLE_BYTES)
        now = self._clock()
        with self._lock:
            self._prune(now)
            self._table[handle] = Signing(
                origin=origin, insertion_id=insertion_id, reader=reader, at=now
            )
            while len(self._table) > self._max:
                self._table.popitem(last=False)  # the oldest is the least likely in use
        return handle

    def claim(self, origin: str, handle: object) -> Signing | None:
        """The signing `handle` names, used up; None when it is unknown, expired or
        another origin's (the card session must then end)."""
        if not isinstance(handle, str) or not _HANDLE_RE.fullmatch(handle):
            return None
        with self._lock:
            self._prune(self._clock())
            signing = self._table.pop(handle, None)
        if signing is None or signing.origin != origin:
            return None
        return signing

    def claim_sole(self, origin: str) -> Signing | None:
        """For a page that sends no handle: this origin's latest unclaimed signing, used
        up, when all of them name one card insertion; else None (the card session must
        then end: it cannot be told whose it is)."""
        with self._lock:
            self._prune(self._clock())
            mine = [(h, s) for h, s in self._table.items() if s.origin == origin]
            insertions = {s.insertion_id for _, s in mine}
            if len(insertions) != 1:
                if insertions:
                    log.info(
                        "a card session without a signing handle for %s: %d cards signed"
                        " for it; ending it",
                        origin,
                        len(insertions),
                    )
                return None
            handle, signing = mine[-1]
            del self._table[handle]
        return signing

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    def _prune(self, now: float) -> None:
        # Oldest first, so the loop stops at the first one still young enough.
        while self._table:
            handle, signing = next(iter(self._table.items()))
            if now - signing.at <= self._max_age:
                break
            del self._table[handle]
