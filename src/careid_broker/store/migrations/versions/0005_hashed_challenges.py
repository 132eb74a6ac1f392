"""Keep card challenges as SHA-256 only, as codes and tokens are.

Challenges live five minutes and are never migrated: the table is recreated, so a
sign-in in flight during the upgrade asks for a new challenge (the page does so).

Revision ID: 0005_hashed_challenges
Revises: 0004_ocsp_answers
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_hashed_challenges"
down_revision: str | Sequence[str] | None = "0004_ocsp_answers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _create(key: str, length: int) -> None:
    op.create_table(
        "card_challenges",
        sa.Column(key, sa.String(length=length), nullable=False),
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
        sa.PrimaryKeyConstraint(key, name=op.f("pk_card_challenges")),
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


def _drop() -> None:
    op.drop_index(op.f("ix_card_challenges_transaction_hash"), table_name="card_challenges")
    op.drop_index(op.f("ix_card_challenges_expires_at"), table_name="card_challenges")
    op.drop_table("card_challenges")


def upgrade() -> None:
    _drop()
    _create("challenge_hash", 64)


def downgrade() -> None:
    _drop()
    _create("challenge", 43)
