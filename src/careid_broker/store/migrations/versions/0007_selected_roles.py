"""The role a person chose at sign-in (CIS2's `selectedrole`): kept with the sign-in
session so it is not asked again during it, and per person so the last choice is
offered first next time.

Revision ID: 0007_selected_roles
Revises: 0006_registration_certificates
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_selected_roles"
down_revision: str | Sequence[str] | None = "0006_registration_certificates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signin_sessions") as batch:
        batch.add_column(sa.Column("selected_role_id", sa.String(32), nullable=True))
    op.create_table(
        "role_choices",
        sa.Column("sub", sa.String(64), sa.ForeignKey("subjects.sub"), primary_key=True),
        sa.Column("person_roleid", sa.String(32), nullable=False),
        sa.Column("chosen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("role_choices")
    with op.batch_alter_table("signin_sessions") as batch:
        batch.drop_column("selected_role_id")
