"""A `sub` belongs to a directory entry, not only to its mail address: the entry's
immutable identifier is kept beside it, and a `sub` whose address was given to another
entry is retired (kept for audit) so the new entry gets its own (OIDC Core §2).

Rows made before this revision have no identifier; each takes its entry's at its next
sign-in. Only the current row of an address must be unique now.

Revision ID: 0013_subject_entry_ids
Revises: 0012_session_certificates
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_subject_entry_ids"
down_revision: str | Sequence[str] | None = "0012_session_certificates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CURRENT = sa.text("retired_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("account_entry_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("uq_subjects_account_mail"), type_="unique")
    op.create_index(
        "uq_subjects_current_account_mail",
        "subjects",
        ["account_mail"],
        unique=True,
        sqlite_where=_CURRENT,
        postgresql_where=_CURRENT,
    )


def downgrade() -> None:
    op.drop_index("uq_subjects_current_account_mail", table_name="subjects")
    # A retired row's address now belongs to another row, which the old unique constraint
    # forbids: it keeps its `sub` (sessions point at it) under an address no one has.
    op.execute("UPDATE subjects SET account_mail = 'retired:' || sub WHERE retired_at IS NOT NULL")
    with op.batch_alter_table("subjects") as batch:
        batch.create_unique_constraint(op.f("uq_subjects_account_mail"), ["account_mail"])
        batch.drop_column("retired_at")
        batch.drop_column("account_entry_id")
