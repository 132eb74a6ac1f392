"""Where verified OCSP answers are kept between sign-ins: `OcspAnswerCache`.

An answer is kept as the responder's signed DER and verified again (signature and
freshness) whenever it is used, so a cache shared through the database
(`careid_broker.store.OcspAnswerTable`) is never trusted blindly. The broker shares one
cache between every worker and instance; `MemoryAnswerCache` keeps one per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


def serial_key_suffix(serial: int) -> str:
    """How a cache key (issuer name hash : issuer key hash : serial) ends for a serial."""
    return f":{serial:x}"


class CachedAnswer(Protocol):
    """A kept answer (read-only)."""

    @property
    def der(self) -> bytes: ...

    @property
    def location(self) -> str: ...


class OcspAnswerCache(Protocol):
    """Verified OCSP answers by CertID key, each until its own expiry."""

    def get(self, key: str, now: datetime) -> CachedAnswer | None:
        """The answer kept for `key`, unless it has expired by `now`."""
        ...

    def put(self, key: str, *, der: bytes, location: str, expires: datetime) -> None:
        """Keep an answer until `expires` (replacing any older one)."""
        ...

    def clear(self) -> None:
        """Forget every answer (an emergency revocation)."""
        ...

    def forget_serial(self, serial: int) -> None:
        """Forget the answers about certificates with this serial number (any issuer)."""
        ...

    def size(self) -> int:
        """How many answers are kept (expired ones included until replaced)."""
        ...


@dataclass(frozen=True, kw_only=True)
class _Entry:
    der: bytes
    location: str
    expires: datetime


class MemoryAnswerCache:
    """Answers in this process only, the least recently used dropped past `max_entries`."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key: str, now: datetime) -> CachedAnswer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry.expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: str, *, der: bytes, location: str, expires: datetime) -> None:
        if self._max == 0:
            return
        with self._lock:
            self._entries[key] = _Entry(der=der, location=location, expires=expires)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def forget_serial(self, serial: int) -> None:
        suffix = serial_key_suffix(serial)
        with self._lock:
            for key in [k for k in self._entries if k.endswith(suffix)]:
                del self._entries[key]

    def size(self) -> int:
        with self._lock:
            return len(self._entries)
