"""Keep the linked certificate with each registration, so that an administrator can check
its revocation with no card in a reader.

Revision ID: 0006_registration_certificates
Revises: 0005_hashed_challenges
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_registration_certificates"
down_revision: str | Sequence[str] | None = "0005_hashed_challenges"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("cert_der", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("cert_der")
