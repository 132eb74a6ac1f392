"""Access and refresh tokens: hashed at rest, refresh rotation with reuse detection.

Tokens issued from one grant form a `family` (the first refresh token's lineage and
the access tokens issued beside it). Presenting a refresh token that was already
rotated means two parties hold it — the client and a thief — so the whole family is
revoked (OAuth 2.0 Security BCP, RFC 9700 §4.14).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from careid_broker.store._sql import insert_new, serialize_on_name
from careid_broker.store.base import new_secret, require_aware, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import AuthorizationCode, OAuthToken
from careid_broker.store.prepared import Prepared


class TokenKind(StrEnum):
    """The two bearer token kinds the broker issues."""

    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedTokens:
    """Ids and expiries of tokens just stored (the raw values stay with the caller)."""

    family: str
    access_token_id: int
    access_expires_at: datetime
    refresh_token_id: int | None
    refresh_expires_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenRecord:
    """A stored token as it stands, live or not (`find` does not judge it)."""

    kind: TokenKind
    client_id: str
    sub: str
    scope: str
    sid: str | None
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    rotated_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessTokenInfo:
    """What userinfo needs to know about a live access token."""

    client_id: str
    sub: str
    scope: str
    sid: str | None
    issued_at: datetime
    expires_at: datetime
    claims: Mapping[str, Any] = field(default_factory=dict)


class RotateOutcome(StrEnum):
    """The result of presenting a refresh token."""

    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"
    WRONG_CLIENT = "wrong_client"


@dataclass(frozen=True, kw_only=True, slots=True)
class RotateResult:
    """For OK: the new tokens and the grant they carry on; else how many were revoked."""

    outcome: RotateOutcome
    issued: IssuedTokens | None = None
    sub: str | None = None
    scope: str | None = None
    sid: str | None = None
    code_id: int | None = None
    tokens_revoked: int = 0


class RevokeOutcome(StrEnum):
    """The result of an RFC 7009 revocation request."""

    REVOKED = "revoked"
    NOT_FOUND = "not_found"  # still answered 200, RFC 7009 §2.2
    WRONG_CLIENT = "wrong_client"


@dataclass(frozen=True, kw_only=True, slots=True)
class RevokeResult:
    """How a revocation went, and how many tokens it revoked."""

    outcome: RevokeOutcome
    tokens_revoked: int = 0


_TOKEN_TABLE = OAuthToken.__table__
_CODE_TABLE = AuthorizationCode.__table__
_TOKENS = _TOKEN_TABLE.c
_CODES = _CODE_TABLE.c
# A live access token and the claims of its grant: one statement, compiled once (it
# runs for every userinfo request).
_LIVE_ACCESS_TOKEN = Prepared(
    select(
        _TOKENS.client_id,
        _TOKENS.sub,
        _TOKENS.scope,
        _TOKENS.sid,
        _TOKENS.issued_at,
        _TOKENS.expires_at,
        _CODES.claims,
    )
    .select_from(_TOKEN_TABLE.outerjoin(_CODE_TABLE, _CODES.id == _TOKENS.code_id))
    .where(
        _TOKENS.token_hash == bindparam("token_hash"),
        _TOKENS.kind == TokenKind.ACCESS.value,
        _TOKENS.revoked_at.is_(None),
        _TOKENS.expires_at > bindparam("now"),
    )
)


def new_opaque_token() -> str:
    """A random bearer token (256 bits) for callers that do not use JWT tokens."""
    return new_secret()


class Tokens:
    """Store, rotate, revoke and look up tokens."""

    def __init__(
        self,
        store: Store,
        *,
        access_ttl: timedelta = timedelta(minutes=10),
        refresh_ttl: timedelta = timedelta(hours=8),
    ) -> None:
        self._store = store
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl

    def issue(
        self,
        *,
        client_id: str,
        sub: str,
        scope: str,
        access_token: str,
        refresh_token: str | None = None,
        sid: str | None = None,
        code_id: int | None = None,
    ) -> IssuedTokens:
        """Store a new grant's tokens (from the code exchange)."""
        with self._store.transaction() as session:
            return _insert_pair(
                session,
                now=self._store.now(),
                family=new_secret(24),
                client_id=client_id,
                sub=sub,
                scope=scope,
                sid=sid,
                code_id=code_id,
                access_token=access_token,
                refresh_token=refresh_token,
                access_ttl=self._access_ttl,
                refresh_ttl=self._refresh_ttl,
            )

    def rotate_refresh_token(
        self,
        old_refresh_token: str,
        *,
        client_id: str,
        new_access_token: str,
        new_refresh_token: str,
        scope: str | None = None,
        now: datetime | None = None,
    ) -> RotateResult:
        """Exchange a refresh token for new tokens; the old one works exactly once.

        `scope` narrows the grant (the caller checks it does not widen it, RFC 6749 §6).
        """
        when = require_aware(now) if now is not None else self._store.now()
        old_hash = sha256_hex(old_refresh_token)
        with self._store.transaction() as session:
            family = session.scalar(
                select(OAuthToken.family).where(OAuthToken.token_hash == old_hash)
            )
            if family is None:
                return RotateResult(outcome=RotateOutcome.UNKNOWN)
            _lock_families(session, [family])
            old = session.scalars(
                update(OAuthToken)
                .where(
                    OAuthToken.token_hash == old_hash,
                    OAuthToken.kind == TokenKind.REFRESH.value,
                    OAuthToken.client_id == client_id,
                    OAuthToken.rotated_at.is_(None),
                    OAuthToken.revoked_at.is_(None),
                    OAuthToken.expires_at > when,
                )
                .values(rotated_at=when)
                .returning(OAuthToken),
                execution_options={"synchronize_session": False},
            ).one_or_none()
            if old is None:
                return _refused_rotation(session, old_hash, client_id, when)
            issued = _insert_pair(
                session,
                now=when,
                family=old.family,
                client_id=old.client_id,
                sub=old.sub,
                scope=scope if scope is not None else old.scope,
                sid=old.sid,
                code_id=old.code_id,
                access_token=new_access_token,
                refresh_token=new_refresh_token,
                access_ttl=self._access_ttl,
                refresh_ttl=self._refresh_ttl,
            )
            session.execute(
                update(OAuthToken)
                .where(OAuthToken.id == old.id)
                .values(rotated_to=issued.refresh_token_id),
                execution_options={"synchronize_session": False},
            )
            return RotateResult(
                outcome=RotateOutcome.OK,
                issued=issued,
                sub=old.sub,
                scope=scope if scope is not None else old.scope,
                sid=old.sid,
                code_id=old.code_id,
            )

    def revoke_token(self, token: str, *, client_id: str) -> RevokeResult:
        """RFC 7009 revocation: only the client the token was issued to may revoke it.

        Revoking a refresh token revokes its whole family (the access tokens issued
        from the same grant too, RFC 7009 §2.1); an access token is revoked alone.
        """
        now = self._store.now()
        with self._store.transaction() as session:
            row = session.scalar(
                select(OAuthToken).where(OAuthToken.token_hash == sha256_hex(token))
            )
            if row is None:
                return RevokeResult(outcome=RevokeOutcome.NOT_FOUND)
            if not hmac.compare_digest(row.client_id, client_id):
                return RevokeResult(outcome=RevokeOutcome.WRONG_CLIENT)
            if row.kind == TokenKind.REFRESH.value:
                count = _revoke_family(session, row.family, now)
            else:
                count = revoke_tokens_where(session, OAuthToken.id == row.id, now)
            return RevokeResult(outcome=RevokeOutcome.REVOKED, tokens_revoked=count)

    def find(self, token: str) -> TokenRecord | None:
        """Any stored token, even expired, revoked or rotated, or None if unknown.

        For the refresh and revocation endpoints, which must see a replayed token to
        react to it; `rotate_refresh_token` and `revoke_token` still decide atomically.
        """
        with self._store.session() as session:
            row = session.scalar(
                select(OAuthToken).where(OAuthToken.token_hash == sha256_hex(token))
            )
            if row is None:
                return None
            return TokenRecord(
                kind=TokenKind(row.kind),
                client_id=row.client_id,
                sub=row.sub,
                scope=row.scope,
                sid=row.sid,
                issued_at=row.issued_at,
                expires_at=row.expires_at,
                revoked_at=row.revoked_at,
                rotated_at=row.rotated_at,
            )

    def lookup_access_token(
        self, token: str, *, now: datetime | None = None
    ) -> AccessTokenInfo | None:
        """A live access token (not expired, not revoked), or None."""
        when = require_aware(now) if now is not None else self._store.now()
        with self._store.session() as session:
            row = _LIVE_ACCESS_TOKEN.one_or_none(
                session, {"token_hash": sha256_hex(token), "now": when}
            )
            if row is None:
                return None
            return AccessTokenInfo(
                client_id=row.client_id,
                sub=row.sub,
                scope=row.scope,
                sid=row.sid,
                issued_at=row.issued_at,
                expires_at=row.expires_at,
                claims=dict(row.claims or {}),
            )

    def revoke_family(self, family: str) -> int:
        """Revoke every token of a grant; how many were still live."""
        with self._store.transaction() as session:
            return _revoke_family(session, family, self._store.now())


def _insert_pair(
    session: Session,
    *,
    now: datetime,
    family: str,
    client_id: str,
    sub: str,
    scope: str,
    sid: str | None,
    code_id: int | None,
    access_token: str,
    refresh_token: str | None,
    access_ttl: timedelta,
    refresh_ttl: timedelta,
) -> IssuedTokens:
    common: dict[str, Any] = {
        "family": family,
        "client_id": client_id,
        "sub": sub,
        "scope": scope,
        "sid": sid,
        "code_id": code_id,
        "issued_at": now,
    }
    access = OAuthToken(
        token_hash=sha256_hex(access_token),
        kind=TokenKind.ACCESS.value,
        expires_at=now + access_ttl,
        **common,
    )
    insert_new(session, access)
    refresh = None
    if refresh_token is not None:
        refresh = OAuthToken(
            token_hash=sha256_hex(refresh_token),
            kind=TokenKind.REFRESH.value,
            expires_at=now + refresh_ttl,
            **common,
        )
        insert_new(session, refresh)
    return IssuedTokens(
        family=family,
        access_token_id=access.id,
        access_expires_at=access.expires_at,
        refresh_token_id=refresh.id if refresh else None,
        refresh_expires_at=refresh.expires_at if refresh else None,
    )


def _refused_rotation(
    session: Session, old_hash: str, client_id: str, now: datetime
) -> RotateResult:
    row = session.scalar(
        select(OAuthToken).where(
            OAuthToken.token_hash == old_hash, OAuthToken.kind == TokenKind.REFRESH.value
        )
    )
    if row is None:
        return RotateResult(outcome=RotateOutcome.UNKNOWN)
    if not hmac.compare_digest(row.client_id, client_id):
        # Another client holding this client's refresh token means it leaked.
        count = _revoke_family(session, row.family, now)
        return RotateResult(outcome=RotateOutcome.WRONG_CLIENT, tokens_revoked=count)
    if row.revoked_at is not None:
        return RotateResult(outcome=RotateOutcome.REVOKED)
    if row.rotated_at is not None:
        count = _revoke_family(session, row.family, now)
        return RotateResult(outcome=RotateOutcome.REUSED, tokens_revoked=count)
    return RotateResult(outcome=RotateOutcome.EXPIRED)


def _revoke_family(session: Session, family: str, now: datetime) -> int:
    return revoke_tokens_where(session, OAuthToken.family == family, now)


def _lock_families(session: Session, families: Iterable[str]) -> None:
    # Every transaction that changes several tokens takes its families' locks first, in
    # sorted order. Without this, PostgreSQL deadlocks: an UPDATE that waited for a
    # concurrent rotation keeps its row lock even when it then matches nothing, and
    # goes on to lock the rest of the family in another order than its rival.
    for family in sorted(set(families)):
        serialize_on_name(session, f"careid-token-family:{family}")


def lock_families_where(session: Session, condition: Any) -> bool:
    """Take the family locks of every live token matching `condition`; any found?"""
    families = session.scalars(
        select(OAuthToken.family).where(condition, OAuthToken.revoked_at.is_(None)).distinct()
    ).all()
    _lock_families(session, families)
    return bool(families)


def revoke_tokens_where(session: Session, condition: Any, now: datetime) -> int:
    """Revoke the live tokens matching `condition`; how many were revoked."""
    if not lock_families_where(session, condition):
        return 0
    result = session.execute(
        update(OAuthToken).where(condition, OAuthToken.revoked_at.is_(None)).values(revoked_at=now),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0))
