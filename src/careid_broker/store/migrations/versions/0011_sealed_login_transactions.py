"""A relying party's pending login transaction is sealed into its id, not stored.

Such a transaction gets a row only once it has completed or been ended early, so a card
challenge can no longer refer to its transaction's row: the foreign key goes.
Challenges live five minutes and are never migrated: the table is recreated, as in
0005 (a sign-in in flight asks for a new challenge; the page does so). Pending rows
stay: the broker still reads, completes and expires stored transactions, as it keeps
AUP and registration steps, so those carry on. A relying party's sign-in half-way
through starts again from the relying party: the browser's cookie now names the
transactions it started by a digest, and its old entry does not match.

Revision ID: 0011_sealed_login_transactions
Revises: 0010_shared_crls
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_sealed_login_transactions"
down_revision: str | Sequence[str] | None = "0010_shared_crls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _create(*, with_foreign_key: bool) -> None:
    constraints: list[sa.Constraint] = [
        sa.PrimaryKeyConstraint("challenge_hash", name=op.f("pk_card_challenges"))
    ]
    if with_foreign_key:
        constraints.append(
            sa.ForeignKeyConstraint(
                ["transaction_hash"],
                ["login_transactions.id_hash"],
                name=op.f("fk_card_challenges_transaction_hash_login_transactions"),
                ondelete="CASCADE",
            )
        )
    op.create_table(
        "card_challenges",
        sa.Column("challenge_hash", sa.String(length=64), nullable=False),
        sa.Column("transaction_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        *constraints,
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
    _create(with_foreign_key=False)


def downgrade() -> None:
    # Sealed transactions made after the upgrade have no rows for challenges to refer
    # to, and the code before it cannot open them: their sign-ins start again.
    _drop()
    _create(with_foreign_key=True)
