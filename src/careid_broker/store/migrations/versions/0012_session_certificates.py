"""The certificate a card's sign-in session was opened with: a CRL that lists it ends
the session even once the registration names the holder's renewed card.

Sessions opened before this revision name no certificate; they still end when their
card's registered certificate is revoked, as before.

Revision ID: 0012_session_certificates
Revises: 0011_sealed_login_transactions
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_session_certificates"
down_revision: str | Sequence[str] | None = "0011_sealed_login_transactions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signin_sessions") as batch:
        batch.add_column(sa.Column("cert_issuer_dn", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("cert_serial", sa.String(64), nullable=True))
    op.create_index(
        op.f("ix_signin_sessions_cert_serial"), "signin_sessions", ["cert_serial"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_signin_sessions_cert_serial"), table_name="signin_sessions")
    with op.batch_alter_table("signin_sessions") as batch:
        batch.drop_column("cert_serial")
        batch.drop_column("cert_issuer_dn")
