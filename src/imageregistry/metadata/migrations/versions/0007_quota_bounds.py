"""quota admission bounds in their own table (integers the push check updates in place)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 02:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_bounds",
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("storage", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace"),
    )
    # The bounds kept in `settings` before: a bound may always be dropped (the next push
    # into the namespace computes its usage from scratch).
    op.execute("DELETE FROM settings WHERE key LIKE 'quota-bound:%'")


def downgrade() -> None:
    op.drop_table("quota_bounds")
