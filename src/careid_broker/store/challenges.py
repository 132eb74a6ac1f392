"""Card challenges (`careid-auth:1`): single-use nonces bound to a login transaction."""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, select, update

from careid_broker.store._sql import insert_new, table_of
from careid_broker.store.base import require_aware, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import CardChallenge
from careid_broker.store.prepared import Prepared
from careid_broker.store.transactions import LoginTransactions
from careid_protocol.errors import ErrorCode

CHALLENGE_BYTES = 32
CHALLENGE_LENGTH = 43  # base64url of 32 bytes, no padding


class ChallengeOutcome(StrEnum):
    """The result of presenting a challenge."""

    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    WRONG_TRANSACTION = "wrong_transaction"

    @property
    def error_code(self) -> ErrorCode | None:
        """The stable error code to answer with, or None for OK."""
        return _ERRORS.get(self)


_ERRORS = {
    ChallengeOutcome.UNKNOWN: ErrorCode.CHALLENGE_UNKNOWN,
    ChallengeOutcome.EXPIRED: ErrorCode.CHALLENGE_EXPIRED,
    ChallengeOutcome.USED: ErrorCode.CHALLENGE_USED,
    ChallengeOutcome.WRONG_TRANSACTION: ErrorCode.CHALLENGE_WRONG_TRANSACTION,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedChallenge:
    """A challenge to send to the browser (`{"challenge": …, "expiresAt": …}`)."""

    challenge: str
    expires_at: datetime


def new_challenge() -> str:
    """32 bytes from the OS CSPRNG, base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(CHALLENGE_BYTES)).rstrip(b"=").decode()


_CHALLENGES = table_of(CardChallenge).c
# Card sign-in's statement, compiled once (see `prepared`).
_CONSUME = Prepared(
    update(table_of(CardChallenge))
    .where(_CHALLENGES.challenge_hash == bindparam("hash"), _CHALLENGES.consumed_at.is_(None))
    .values(consumed_at=bindparam("now"))
    .returning(_CHALLENGES.transaction_hash, _CHALLENGES.expires_at)
)


class CardChallenges:
    """Issue challenges and consume them exactly once."""

    def __init__(
        self,
        store: Store,
        *,
        transactions: LoginTransactions,
        ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._store = store
        self._transactions = transactions
        self._ttl = ttl

    def issue(self, transaction_id: str) -> IssuedChallenge | None:
        """A fresh challenge for a pending transaction; None if it is not pending."""
        now = self._store.now()
        transaction_hash = sha256_hex(transaction_id)
        with self._store.transaction() as session:
            if not self._transactions.pending_in(session, transaction_id):
                return None
            value = new_challenge()
            row = CardChallenge(
                challenge_hash=sha256_hex(value),
                transaction_hash=transaction_hash,
                created_at=now,
                expires_at=now + self._ttl,
                consumed_at=None,
            )
            insert_new(session, row)
            return IssuedChallenge(challenge=value, expires_at=row.expires_at)

    def consume(
        self, challenge: str, transaction_id: str, *, now: datetime | None = None
    ) -> ChallengeOutcome:
        """Use a challenge up; exactly one caller ever gets OK for a challenge.

        One conditional UPDATE (… WHERE consumed_at IS NULL RETURNING) decides, so two
        threads or two broker instances cannot both succeed. A challenge presented with
        the wrong transaction is burned too: it has leaked out of the browser window it
        was issued to, and leaving it live would let whoever holds it try again; the
        real user only has to reload.
        """
        when = require_aware(now) if now is not None else self._store.now()
        if len(challenge) != CHALLENGE_LENGTH or not challenge.isascii():
            return ChallengeOutcome.UNKNOWN  # never issued, and not every string hashes
        challenge_hash = sha256_hex(challenge)
        with self._store.transaction() as session:
            row = _CONSUME.one_or_none(session, {"hash": challenge_hash, "now": when})
            if row is None:
                known = session.scalar(
                    select(CardChallenge.challenge_hash).where(
                        CardChallenge.challenge_hash == challenge_hash
                    )
                )
                return ChallengeOutcome.USED if known else ChallengeOutcome.UNKNOWN
        if not hmac.compare_digest(row.transaction_hash, sha256_hex(transaction_id)):
            return ChallengeOutcome.WRONG_TRANSACTION
        if row.expires_at <= when:
            return ChallengeOutcome.EXPIRED
        return ChallengeOutcome.OK
