"""Authorization codes (RFC 6749 §4.1.2): hashed at rest, redeemed exactly once."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, select, update

from careid_broker.store._sql import columns_of, insert_new, row_where, table_of
from careid_broker.store.base import new_secret, require_aware, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import AuthorizationCode, OAuthToken
from careid_broker.store.prepared import Prepared
from careid_broker.store.tokens import revoke_tokens_where


@dataclass(frozen=True, kw_only=True, slots=True)
class CodeGrant:
    """Everything the token endpoint needs from the authorization step."""

    client_id: str
    redirect_uri: str
    scope: str
    sid: str
    sub: str
    auth_time: datetime
    acr: str
    amr: Sequence[str]
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    # The ID token / userinfo claims as they stood at sign-in (no secrets).
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedCode:
    """A new code: `code` goes into the redirect, nowhere else."""

    code: str
    code_id: int
    expires_at: datetime


class RedeemOutcome(StrEnum):
    """The result of presenting a code at the token endpoint."""

    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REUSED = "reused"
    WRONG_CLIENT = "wrong_client"


@dataclass(frozen=True, kw_only=True, slots=True)
class RedeemResult:
    """`grant` and `code_id` are set for OK; `tokens_revoked` counts for REUSED."""

    outcome: RedeemOutcome
    code_id: int | None = None
    grant: CodeGrant | None = None
    tokens_revoked: int = 0


def _grant(row: AuthorizationCode | Row[Any]) -> CodeGrant:
    return CodeGrant(
        client_id=row.client_id,
        redirect_uri=row.redirect_uri,
        scope=row.scope,
        sid=row.sid,
        sub=row.sub,
        auth_time=row.auth_time,
        acr=row.acr,
        amr=tuple(row.amr),
        nonce=row.nonce,
        code_challenge=row.code_challenge,
        code_challenge_method=row.code_challenge_method,
        claims=dict(row.claims),
    )


_TABLE = table_of(AuthorizationCode)
# An unused code → used now, returning the row: one statement, compiled once.
_REDEEM = Prepared(
    update(_TABLE)
    .where(_TABLE.c.code_hash == bindparam("hash"), _TABLE.c.consumed_at.is_(None))
    .values(consumed_at=bindparam("now"))
    .returning(*columns_of(AuthorizationCode))
)


class AuthorizationCodes:
    """Issue and redeem authorization codes."""

    def __init__(self, store: Store, *, ttl: timedelta = timedelta(seconds=60)) -> None:
        self._store = store
        self._ttl = ttl

    def issue(self, grant: CodeGrant) -> IssuedCode:
        """Store a new code for a completed sign-in."""
        code = new_secret()
        now = self._store.now()
        row = AuthorizationCode(
            code_hash=sha256_hex(code),
            client_id=grant.client_id,
            redirect_uri=grant.redirect_uri,
            scope=grant.scope,
            nonce=grant.nonce,
            code_challenge=grant.code_challenge,
            code_challenge_method=grant.code_challenge_method,
            sid=grant.sid,
            sub=grant.sub,
            auth_time=grant.auth_time,
            acr=grant.acr,
            amr=list(grant.amr),
            claims=dict(grant.claims),
            created_at=now,
            expires_at=now + self._ttl,
            consumed_at=None,
        )
        with self._store.transaction() as session:
            insert_new(session, row)
            return IssuedCode(code=code, code_id=row.id, expires_at=row.expires_at)

    def peek(self, code: str, *, client_id: str, now: datetime | None = None) -> RedeemResult:
        """What `redeem` would answer, read without using the code up (a read only).

        OK means the code exists, is unused, belongs to this client and is in time; the
        token endpoint then redeems it in the transaction that issues the tokens, so a
        code exchange writes once. Any other answer changes nothing here: the caller
        redeems to burn the code (and, for a reused one, revoke its tokens).
        """
        when = require_aware(now) if now is not None else self._store.now()
        with self._store.session() as session:
            row = row_where(session, AuthorizationCode, "code_hash", sha256_hex(code))
            if row is None:
                return RedeemResult(outcome=RedeemOutcome.UNKNOWN)
            if row.consumed_at is not None:
                return RedeemResult(outcome=RedeemOutcome.REUSED, code_id=row.id)
            if not hmac.compare_digest(row.client_id, client_id):
                return RedeemResult(outcome=RedeemOutcome.WRONG_CLIENT, code_id=row.id)
            if row.expires_at <= when:
                return RedeemResult(outcome=RedeemOutcome.EXPIRED, code_id=row.id)
            return RedeemResult(outcome=RedeemOutcome.OK, code_id=row.id, grant=_grant(row))

    def redeem(self, code: str, *, client_id: str, now: datetime | None = None) -> RedeemResult:
        """Use a code up; exactly one caller ever gets OK for a code.

        A second presentation is an attack or a broken client: RFC 6749 §4.1.2 says to
        revoke what the code produced, so the tokens issued from it are revoked here,
        in the same transaction. A code presented by another client, or too late, is
        burned as well: it has leaked or is stale, and the real client can restart.
        """
        when = require_aware(now) if now is not None else self._store.now()
        code_hash = sha256_hex(code)
        with self._store.transaction() as session:
            row = _REDEEM.one_or_none(session, {"hash": code_hash, "now": when})
            if row is None:
                code_id = session.scalar(
                    select(AuthorizationCode.id).where(AuthorizationCode.code_hash == code_hash)
                )
                if code_id is None:
                    return RedeemResult(outcome=RedeemOutcome.UNKNOWN)
                revoked = revoke_tokens_where(session, OAuthToken.code_id == code_id, when)
                return RedeemResult(
                    outcome=RedeemOutcome.REUSED, code_id=code_id, tokens_revoked=revoked
                )
            if not hmac.compare_digest(row.client_id, client_id):
                return RedeemResult(outcome=RedeemOutcome.WRONG_CLIENT, code_id=row.id)
            if row.expires_at <= when:
                return RedeemResult(outcome=RedeemOutcome.EXPIRED, code_id=row.id)
            return RedeemResult(outcome=RedeemOutcome.OK, code_id=row.id, grant=_grant(row))
