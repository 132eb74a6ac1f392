"""Single-use JWT ids (e.g. `private_key_jwt` client assertions, RFC 7523 §3 item 7)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete

from careid_broker.store._sql import insert_ignore
from careid_broker.store.base import require_aware, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import UsedJti


class UsedJtis:
    """Remember each `jti` until its token expires; accept it once."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def use_once(self, *, scope: str, jti: str, expires_at: datetime) -> bool:
        """True the first time (scope, jti) is seen while unexpired; False on a replay.

        `expires_at` must be no earlier than the last moment the token could still be
        accepted: from then on the entry is cleared and the jti would be accepted again.

        The INSERT decides (primary key, ON CONFLICT DO NOTHING), so two instances
        receiving the same assertion at once accept it exactly once.
        """
        now = self._store.now()
        # The client chooses the jti: hash it with its scope to a fixed-size key.
        key = sha256_hex(f"{scope}\x00{jti}")
        with self._store.transaction() as session:
            # A long-expired entry no longer protects anything (the token's own expiry
            # refuses it); clearing it keeps the key usable and the table small.
            session.execute(delete(UsedJti).where(UsedJti.key == key, UsedJti.expires_at <= now))
            return insert_ignore(
                session,
                UsedJti,
                {"key": key, "expires_at": require_aware(expires_at)},
                ["key"],
            )

    def purge(self) -> int:
        """Forget every expired entry (housekeeping); how many were removed."""
        with self._store.transaction() as session:
            result = session.execute(delete(UsedJti).where(UsedJti.expires_at <= self._store.now()))
            return int(getattr(result, "rowcount", 0))
