"""The newest CRL per source and issuer, shared by every worker and instance.

Revision ID: 0010_shared_crls
Revises: 0009_erase_retired_keys
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_shared_crls"
down_revision: str | Sequence[str] | None = "0009_erase_retired_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shared_crls",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=2048), nullable=False),
        sa.Column("last_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shared_crls")),
    )


def downgrade() -> None:
    op.drop_table("shared_crls")
