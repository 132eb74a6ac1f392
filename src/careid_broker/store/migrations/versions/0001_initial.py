"""Initial schema of the broker store.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Dropped in reverse order of creation: children before the tables they reference.
_TABLES = (
    "audit_log",
    "login_transactions",
    "logout_outbox",
    "registrations",
    "signing_keys",
    "used_jtis",
    "subjects",
    "throttle_counters",
    "card_challenges",
    "signin_sessions",
    "authorization_codes",
    "session_relying_parties",
    "oauth_tokens",
)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.String(length=320), nullable=True),
        sa.Column("organisation", sa.String(length=32), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("relying_party", sa.String(length=255), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("outcome IN ('success', 'failure')", name=op.f("ck_audit_log_outcome")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(
        "ix_audit_log_organisation_seq", "audit_log", ["organisation", "seq"], unique=False
    )
    op.create_index("ix_audit_log_subject_seq", "audit_log", ["subject", "seq"], unique=False)

    op.create_table(
        "login_transactions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2048), nullable=False),
        sa.Column("scope", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=1024), nullable=True),
        sa.Column("nonce", sa.String(length=512), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=16), nullable=True),
        sa.Column("prompt", sa.String(length=64), nullable=True),
        sa.Column("max_age", sa.Integer(), nullable=True),
        sa.Column("acr_values", sa.String(length=255), nullable=True),
        sa.Column("extras", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'expired')",
            name=op.f("ck_login_transactions_status"),
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_login_transactions")),
    )
    op.create_index(
        op.f("ix_login_transactions_expires_at"), "login_transactions", ["expires_at"], unique=False
    )

    op.create_table(
        "logout_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("sub", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logout_outbox")),
        sa.UniqueConstraint("jti", name=op.f("uq_logout_outbox_jti")),
    )
    op.create_index(
        op.f("ix_logout_outbox_next_attempt_at"), "logout_outbox", ["next_attempt_at"], unique=False
    )

    op.create_table(
        "registrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("card_uuid", sa.String(length=64), nullable=False),
        sa.Column("account_mail", sa.String(length=320), nullable=False),
        sa.Column("account_dn", sa.String(length=1024), nullable=False),
        sa.Column("org_code", sa.String(length=32), nullable=False),
        sa.Column("link_mode", sa.String(length=16), nullable=False),
        sa.Column("cert_issuer_dn", sa.String(length=1024), nullable=False),
        sa.Column("cert_serial", sa.String(length=64), nullable=False),
        sa.Column("cert_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("how", sa.String(length=32), nullable=False),
        sa.CheckConstraint(
            "link_mode IN ('uuid', 'certificate')", name=op.f("ck_registrations_link_mode")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
        sa.UniqueConstraint("account_mail", name=op.f("uq_registrations_account_mail")),
        sa.UniqueConstraint("card_uuid", name=op.f("uq_registrations_card_uuid")),
    )
    op.create_index(op.f("ix_registrations_org_code"), "registrations", ["org_code"], unique=False)

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("alg IN ('RS256', 'ES256')", name=op.f("ck_signing_keys_alg")),
        sa.CheckConstraint(
            "state IN ('next', 'current', 'previous', 'retired')",
            name=op.f("ck_signing_keys_state"),
        ),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_index(
        "uq_signing_keys_one_current",
        "signing_keys",
        ["alg", "state"],
        unique=True,
        sqlite_where=sa.text("state = 'current'"),
        postgresql_where=sa.text("state = 'current'"),
    )

    op.create_table(
        "used_jtis",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_used_jtis")),
    )
    op.create_index(op.f("ix_used_jtis_expires_at"), "used_jtis", ["expires_at"], unique=False)
    op.create_table(
        "subjects",
        sa.Column("sub", sa.String(length=64), nullable=False),
        sa.Column("account_mail", sa.String(length=320), nullable=False),
        sa.Column("account_dn", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sub", name=op.f("pk_subjects")),
        sa.UniqueConstraint("account_mail", name=op.f("uq_subjects_account_mail")),
    )
    op.create_table(
        "throttle_counters",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_throttle_counters")),
    )
    op.create_table(
        "card_challenges",
        sa.Column("challenge", sa.String(length=43), nullable=False),
        sa.Column("transaction_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["transaction_hash"],
            ["login_transactions.id_hash"],
            name=op.f("fk_card_challenges_transaction_hash_login_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("challenge", name=op.f("pk_card_challenges")),
    )
    op.create_index(
        op.f("ix_card_challenges_expires_at"), "card_challenges", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_card_challenges_transaction_hash"),
        "card_challenges",
        ["transaction_hash"],
        unique=False,
    )

    op.create_table(
        "signin_sessions",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("sub", sa.String(length=64), nullable=False),
        sa.Column("account_mail", sa.String(length=320), nullable=False),
        sa.Column("card_uuid", sa.String(length=64), nullable=True),
        sa.Column("acr", sa.String(length=64), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.Column("card_session_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["sub"], ["subjects.sub"], name=op.f("fk_signin_sessions_sub_subjects")
        ),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_signin_sessions")),
        sa.UniqueConstraint("card_session_hash", name=op.f("uq_signin_sessions_card_session_hash")),
    )
    op.create_index(
        op.f("ix_signin_sessions_account_mail"), "signin_sessions", ["account_mail"], unique=False
    )
    op.create_index(op.f("ix_signin_sessions_sub"), "signin_sessions", ["sub"], unique=False)

    op.create_table(
        "authorization_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2048), nullable=False),
        sa.Column("scope", sa.String(length=1024), nullable=False),
        sa.Column("nonce", sa.String(length=512), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=16), nullable=True),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("sub", sa.String(length=64), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acr", sa.String(length=64), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sid"],
            ["signin_sessions.sid"],
            name=op.f("fk_authorization_codes_sid_signin_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorization_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_authorization_codes_code_hash")),
    )
    op.create_index(
        op.f("ix_authorization_codes_expires_at"),
        "authorization_codes",
        ["expires_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_authorization_codes_sid"), "authorization_codes", ["sid"], unique=False
    )

    op.create_table(
        "session_relying_parties",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("first_issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sid"],
            ["signin_sessions.sid"],
            name=op.f("fk_session_relying_parties_sid_signin_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sid", "client_id", name=op.f("pk_session_relying_parties")),
    )
    op.create_table(
        "oauth_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("sub", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=1024), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=True),
        sa.Column("code_id", sa.Integer(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_to", sa.Integer(), nullable=True),
        sa.CheckConstraint("kind IN ('access', 'refresh')", name=op.f("ck_oauth_tokens_kind")),
        sa.ForeignKeyConstraint(
            ["code_id"],
            ["authorization_codes.id"],
            name=op.f("fk_oauth_tokens_code_id_authorization_codes"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["rotated_to"],
            ["oauth_tokens.id"],
            name=op.f("fk_oauth_tokens_rotated_to_oauth_tokens"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sid"],
            ["signin_sessions.sid"],
            name=op.f("fk_oauth_tokens_sid_signin_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_oauth_tokens_token_hash")),
    )
    op.create_index(op.f("ix_oauth_tokens_code_id"), "oauth_tokens", ["code_id"], unique=False)
    op.create_index(
        op.f("ix_oauth_tokens_expires_at"), "oauth_tokens", ["expires_at"], unique=False
    )
    op.create_index(op.f("ix_oauth_tokens_family"), "oauth_tokens", ["family"], unique=False)
    op.create_index(op.f("ix_oauth_tokens_sid"), "oauth_tokens", ["sid"], unique=False)


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
