"""A registration belongs to the directory entry it was made for, not only to its
address: the entry's immutable identifier is kept beside its DN, so that a card whose
address has been given to another entry (another person) no longer signs in to it.

Rows made before this revision have no identifier: the DN they were made at decides for
them, and a card sign-in that finds the entry there records its identifier.

Revision ID: 0014_registration_entry_ids
Revises: 0013_subject_entry_ids
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_registration_entry_ids"
down_revision: str | Sequence[str] | None = "0013_subject_entry_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("account_entry_id", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("account_entry_id")
