"""Verified OCSP answers shared by every worker and instance.

Revision ID: 0004_ocsp_answers
Revises: 0003_ocsp_responders
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_ocsp_answers"
down_revision: str | Sequence[str] | None = "0003_ocsp_responders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ocsp_answers",
        sa.Column("cert_key", sa.String(length=255), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("location", sa.String(length=2048), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cert_key", name=op.f("pk_ocsp_answers")),
    )
    op.create_index(
        op.f("ix_ocsp_answers_expires_at"), "ocsp_answers", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ocsp_answers_expires_at"), table_name="ocsp_answers")
    op.drop_table("ocsp_answers")
