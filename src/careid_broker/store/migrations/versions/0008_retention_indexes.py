"""Indexes the retention purge needs to find and delete old rows in bounded batches:
ended sessions by when they ended, outbox deliveries by session, throttle counters by
their last failure, and the token that another token was rotated to (without it,
deleting one token scans the whole table for rows pointing at it).

Revision ID: 0008_retention_indexes
Revises: 0007_selected_roles
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_retention_indexes"
down_revision: str | Sequence[str] | None = "0007_selected_roles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("signin_sessions", "ended_at"),
    ("oauth_tokens", "rotated_to"),
    ("logout_outbox", "sid"),
    ("throttle_counters", "last_failure_at"),
)


def upgrade() -> None:
    for table, column in _INDEXES:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(_INDEXES):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
