"""Keep no private key that can no longer sign anything: a retired signing key keeps
its public JWK (a record of what was once published) and loses its private part, which
this upgrade erases from keys retired before it.

Revision ID: 0009_erase_retired_keys
Revises: 0008_retention_indexes
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_erase_retired_keys"
down_revision: str | Sequence[str] | None = "0008_retention_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("private_key_pem", existing_type=sa.Text(), nullable=True)
    op.execute("UPDATE signing_keys SET private_key_pem = NULL WHERE state = 'retired'")


def downgrade() -> None:
    # An erased key cannot come back: a downgraded database keeps retired rows only
    # with a placeholder where the private key was.
    op.execute("UPDATE signing_keys SET private_key_pem = '' WHERE private_key_pem IS NULL")
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("private_key_pem", existing_type=sa.Text(), nullable=False)
