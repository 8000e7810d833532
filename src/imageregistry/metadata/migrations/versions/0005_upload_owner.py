"""owner and staged bytes of upload sessions (per-identity upload caps)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner", sa.String(length=253), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("staged", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.create_index("ix_uploads_owner", ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_owner")
        batch_op.drop_column("staged")
        batch_op.drop_column("owner")
