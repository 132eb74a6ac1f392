"""OCSP responder back-off shared by every worker and instance.

Revision ID: 0003_ocsp_responders
Revises: 0002_heartbeats
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_ocsp_responders"
down_revision: str | Sequence[str] | None = "0002_heartbeats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ocsp_responders",
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("url", name=op.f("pk_ocsp_responders")),
    )


def downgrade() -> None:
    op.drop_table("ocsp_responders")
