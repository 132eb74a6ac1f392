"""Who may administer what: rights from the directory, cached briefly with the session.

The directory is the only authority: a mail account's `admin_org_codes` list the
organisations (ODS codes) its holder administers. The console reads them again for
every new sign-in session and at least every `rights_cache` (at most five minutes)
within one, so rights removed in the directory stop working within that time; each
read also checks that the session's holder may still be signed in (`web.admin_access`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from careid_broker.admin.config import is_org_code, org_key
from careid_broker.directory import MailAccount

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Who acts, over which organisations, and through what (audited with each action).

    `org_codes` None means every organisation: only the break-glass CLI on the broker
    host acts like that.
    """

    name: str
    org_codes: frozenset[str] | None
    via: str

    def covers(self, *codes: str | None) -> bool:
        """Whether any of the given organisation codes is one this actor may act on."""
        if self.org_codes is None:
            return True
        return any(code is not None and org_key(code) in self.org_codes for code in codes)

    def sql_org_codes(self) -> list[str] | None:
        """The codes to filter stored rows by (upper case; the store compares stored
        codes upper-cased), None for all."""
        return None if self.org_codes is None else sorted(self.org_codes)


def admin_orgs(account: MailAccount | None, *, now: datetime) -> frozenset[str]:
    """The organisations an account administers now; none for an unusable account.

    A disabled or expired account, or one whose entry could not be read cleanly, keeps
    no rights: its holder is on their way out, or the data cannot be trusted. (An AUP
    not yet accepted does not matter here: it is not about who they are. The console
    reads rights only after the session's standing check, `signin.standing`, which
    refuses a session whose AUP is no longer current, as a new sign-in would.)
    """
    if account is None or account.problems or not account.active:
        return frozenset()
    if account.expires is not None and now >= account.expires:
        return frozenset()
    orgs: set[str] = set()
    for code in account.admin_org_codes:
        if not code.strip():
            continue
        if not is_org_code(code):
            # Not trusted to name an organisation (nor to go into a header or a query):
            # left out, so rights fail closed, and logged for the directory's keepers.
            log.warning(
                "ignoring an administered organisation that is not an organisation (ODS)"
                " code: %r on %s",
                code[:40],
                account.dn,
            )
            continue
        orgs.add(org_key(code))
    return frozenset(orgs)


def session_key(sid: str) -> str:
    """A short digest naming a sign-in session (the cookie holds no bare session id)."""
    return hashlib.sha256(f"careid-admin-rights:{sid}".encode()).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True)
class CachedRights:
    """Rights read for one sign-in session at one moment (kept in the signed cookie)."""

    session: str
    org_codes: frozenset[str]
    read_at: datetime

    def fresh_for(self, sid: str, *, now: datetime, ttl: timedelta) -> bool:
        """Usable for this session now: same session, read within `ttl` (and not later)."""
        age = now - self.read_at
        return self.session == session_key(sid) and timedelta(0) <= age < ttl

    def to_json(self) -> dict[str, Any]:
        """The cookie form."""
        return {
            "s": self.session,
            "o": sorted(self.org_codes),
            "t": self.read_at.timestamp(),
        }

    @classmethod
    def from_json(cls, value: object) -> CachedRights | None:
        """Back from the cookie form; None for anything unexpected (then re-read)."""
        if not isinstance(value, Mapping):
            return None
        session, orgs, stamp = value.get("s"), value.get("o"), value.get("t")
        if not isinstance(session, str) or not isinstance(orgs, list):
            return None
        if not isinstance(stamp, int | float) or not math.isfinite(stamp):
            return None
        if not all(isinstance(code, str) for code in orgs):
            return None
        try:
            read_at = datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return cls(session=session, org_codes=frozenset(orgs), read_at=read_at)


def describe_orgs(codes: Iterable[str]) -> str:
    """ "RX1, RX2" for headings and logs."""
    return ", ".join(sorted(codes))
