"""The broker's tables (SQLAlchemy 2 typed models).

Bearer secrets — login transaction ids, card-session ids, authorization codes, access
and refresh tokens — are stored only as SHA-256 hex digests: a copy of the database
cannot be replayed against the broker. Repositories hand frozen dataclasses to the
service layer; these classes stay inside the store package.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from careid_broker.store.base import Base, UTCDateTime

HASH_LEN = 64  # SHA-256 hex
MAIL_LEN = 320  # RFC 5321 path limit
DN_LEN = 1024
ENTRY_ID_LEN = 128  # directory.lookups.MAX_ENTRY_ID_LENGTH: longer ones are refused there
CLIENT_ID_LEN = 255
UUID_LEN = 64  # Care Identity UUIDs are 12 digits; leave room for other schemes
ROLE_ID_LEN = 32  # CIS2 person_roleid (12 digits here)


_CURRENT_SUBJECT = text("retired_at IS NULL")


class Subject(Base):
    """The stable opaque OIDC `sub` of one directory account.

    One current row per mail address; a row whose address was given to another entry
    is retired (kept for audit, never handed out again: OIDC Core §2).
    """

    __tablename__ = "subjects"
    __table_args__ = (
        Index(
            "uq_subjects_current_account_mail",
            "account_mail",
            unique=True,
            sqlite_where=_CURRENT_SUBJECT,
            postgresql_where=_CURRENT_SUBJECT,
        ),
    )

    sub: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_mail: Mapped[str] = mapped_column(String(MAIL_LEN))
    account_dn: Mapped[str] = mapped_column(String(DN_LEN))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    account_entry_id: Mapped[str | None] = mapped_column(String(ENTRY_ID_LEN))
    """The directory entry's immutable identifier (entryUUID, objectGUID); None until
    the directory gives one (rows from before revision 0013 take it at next sign-in)."""
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the address was found to belong to another entry."""


class Registration(Base):
    """One card identity linked to one mail account (both sides unique)."""

    __tablename__ = "registrations"
    __table_args__ = (CheckConstraint("link_mode IN ('uuid', 'certificate')", name="link_mode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    card_uuid: Mapped[str] = mapped_column(String(UUID_LEN), unique=True)
    account_mail: Mapped[str] = mapped_column(String(MAIL_LEN), unique=True)
    account_dn: Mapped[str] = mapped_column(String(DN_LEN))
    account_entry_id: Mapped[str | None] = mapped_column(String(ENTRY_ID_LEN))
    """The account entry's immutable identifier (None: made before revision 0014, or
    under a mapping without `entry_id`): the registration is that entry's, not its
    address's."""
    org_code: Mapped[str] = mapped_column(String(32), index=True)
    link_mode: Mapped[str] = mapped_column(String(16))
    cert_issuer_dn: Mapped[str] = mapped_column(String(DN_LEN))
    cert_serial: Mapped[str] = mapped_column(String(64))
    cert_fingerprint: Mapped[str] = mapped_column(String(HASH_LEN))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    how: Mapped[str] = mapped_column(String(32))
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary())
    """The linked certificate itself, so its revocation can be checked with no card."""


class LoginTransaction(Base):
    """A login transaction that has completed or been ended early.

    A pending one is not stored: its id is the sealed request (`store/transactions.py`).
    This row, keyed by the id's SHA-256, is written when its state changes, and only once.
    """

    __tablename__ = "login_transactions"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'completed', 'expired')", name="status"),
    )

    id_hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LEN))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str | None] = mapped_column(String(1024))
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    prompt: Mapped[str | None] = mapped_column(String(64))
    max_age: Mapped[int | None] = mapped_column(Integer)
    acr_values: Mapped[str | None] = mapped_column(String(255))
    extras: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(16))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CardChallenge(Base):
    """A single-use nonce the card signs, bound to one login transaction (the SHA-256 of
    its id: a pending transaction has no row to refer to). Kept as its SHA-256 only: a
    copy of the database holds no challenge a token could be made for."""

    __tablename__ = "card_challenges"

    challenge_hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    transaction_hash: Mapped[str] = mapped_column(String(HASH_LEN), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SigninSession(Base):
    """A broker sign-in session (the browser's SSO session at the broker)."""

    __tablename__ = "signin_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    sub: Mapped[str] = mapped_column(ForeignKey("subjects.sub"), index=True)
    account_mail: Mapped[str] = mapped_column(String(MAIL_LEN), index=True)
    card_uuid: Mapped[str | None] = mapped_column(String(UUID_LEN))
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Indexed for retention: ended sessions are found by when they ended.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    # The agent reports card removal with this id and no cookie: it is a bearer
    # capability to end the session, so only its hash is kept.
    card_session_hash: Mapped[str | None] = mapped_column(String(HASH_LEN), unique=True)
    # The role chosen during this session (CIS2 `selectedrole`): not asked again in it.
    selected_role_id: Mapped[str | None] = mapped_column(String(ROLE_ID_LEN))
    # The certificate a card's session was opened with (its serial in upper-case hex):
    # a CRL that lists it ends the session, even once the registration names the
    # holder's renewed card.
    cert_issuer_dn: Mapped[str | None] = mapped_column(String(DN_LEN))
    cert_serial: Mapped[str | None] = mapped_column(String(64), index=True)


class RoleChoice(Base):
    """The role a person chose last, offered first the next time they are asked."""

    __tablename__ = "role_choices"

    sub: Mapped[str] = mapped_column(ForeignKey("subjects.sub"), primary_key=True)
    person_roleid: Mapped[str] = mapped_column(String(ROLE_ID_LEN))
    chosen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SessionRelyingParty(Base):
    """A client that received tokens in a session (told on back-channel logout)."""

    __tablename__ = "session_relying_parties"

    sid: Mapped[str] = mapped_column(
        ForeignKey("signin_sessions.sid", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LEN), primary_key=True)
    first_issued_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuthorizationCode(Base):
    """An OAuth authorization code (RFC 6749 §4.1), single use, 60 seconds."""

    __tablename__ = "authorization_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LEN))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(1024))
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    sid: Mapped[str] = mapped_column(
        ForeignKey("signin_sessions.sid", ondelete="CASCADE"), index=True
    )
    sub: Mapped[str] = mapped_column(String(64))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime())
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OAuthToken(Base):
    """An access or refresh token; tokens from one grant share a `family`."""

    __tablename__ = "oauth_tokens"
    __table_args__ = (CheckConstraint("kind IN ('access', 'refresh')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    family: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LEN))
    sub: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(1024))
    sid: Mapped[str | None] = mapped_column(
        ForeignKey("signin_sessions.sid", ondelete="SET NULL"), index=True
    )
    code_id: Mapped[int | None] = mapped_column(
        ForeignKey("authorization_codes.id", ondelete="SET NULL"), index=True
    )
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Indexed so that deleting a token (retention) finds the row pointing at it at once
    # rather than scanning the table for every row deleted.
    rotated_to: Mapped[int | None] = mapped_column(
        ForeignKey("oauth_tokens.id", ondelete="SET NULL"), index=True
    )


class LogoutDelivery(Base):
    """A pending back-channel logout (OIDC Back-Channel Logout 1.0) to one client."""

    __tablename__ = "logout_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LEN))
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    # Indexed for retention: a session is kept while a delivery still names it.
    sid: Mapped[str] = mapped_column(String(64), index=True)
    sub: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # A claim is a lease: a worker that dies mid-delivery loses it when this passes.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    abandoned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))


class ThrottleCounter(Base):
    """Failures counted against one key (an account hash or a client address)."""

    __tablename__ = "throttle_counters"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Indexed for retention: counters are forgotten a while after their last failure.
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UsedJti(Base):
    """A JWT id already accepted, kept until that JWT expires (replay protection)."""

    __tablename__ = "used_jtis"

    key: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SigningKey(Base):
    """A key pair the OP signs ID tokens with; at most one per algorithm is `current`."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint("alg IN ('RS256', 'ES256')", name="alg"),
        CheckConstraint("state IN ('next', 'current', 'previous', 'retired')", name="state"),
        # Two instances rotating at once cannot leave two current keys of an algorithm.
        Index(
            "uq_signing_keys_one_current",
            "alg",
            "state",
            unique=True,
            sqlite_where=text("state = 'current'"),
            postgresql_where=text("state = 'current'"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(8))
    # None once retired: a key that signs nothing more keeps no private part.
    private_key_pem: Mapped[str | None] = mapped_column(Text)
    encrypted: Mapped[bool] = mapped_column(Boolean)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """One hash-chained audit record; `hash` covers every field and `prev_hash`."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("outcome IN ('success', 'failure')", name="outcome"),
        Index("ix_audit_log_subject_seq", "subject", "seq"),
        Index("ix_audit_log_organisation_seq", "organisation", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    event: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(8))
    error_code: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(MAIL_LEN))
    subject: Mapped[str | None] = mapped_column(String(MAIL_LEN))
    organisation: Mapped[str | None] = mapped_column(String(32))
    client_address: Mapped[str | None] = mapped_column(String(64))
    relying_party: Mapped[str | None] = mapped_column(String(CLIENT_ID_LEN))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)


class Heartbeat(Base):
    """The last write each broker host made to prove the store takes writes (/readyz)."""

    __tablename__ = "heartbeats"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OcspResponderState(Base):
    """An OCSP responder every worker and instance skips until `until` (it failed)."""

    __tablename__ = "ocsp_responders"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(500))


class OcspAnswer(Base):
    """A verified OCSP answer every worker and instance may use until `expires_at`."""

    __tablename__ = "ocsp_answers"

    cert_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    der: Mapped[bytes] = mapped_column(LargeBinary())
    location: Mapped[str] = mapped_column(String(2048))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SharedCrl(Base):
    """The newest CRL any worker or instance has fetched from one source for one issuer,
    as the issuer signed it: the others take it up at their next check of that issuer."""

    __tablename__ = "shared_crls"

    # SHA-256 of the issuer's certificate fingerprint and the source's location.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    location: Mapped[str] = mapped_column(String(2048))
    last_update: Mapped[datetime] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
