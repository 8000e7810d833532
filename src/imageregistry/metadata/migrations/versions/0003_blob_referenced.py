"""blobs: store when a blob was last referenced, not a hold computed with the grace of then

GC decides eligibility from the current `gc_grace_seconds` (`referenced + grace <= now`),
so changing the setting applies to blobs already stored. Existing rows keep their old
`hold_until` as `referenced`: that is never earlier than the real reference time, so no
blob becomes eligible sooner than it would have (the safe direction).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 20:55:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index("ix_blobs_state_hold")
        batch_op.alter_column("hold_until", new_column_name="referenced")
    op.create_index("ix_blobs_state_referenced", "blobs", ["state", "referenced"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_blobs_state_referenced", table_name="blobs")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.alter_column("referenced", new_column_name="hold_until")
    op.create_index("ix_blobs_state_hold", "blobs", ["state", "hold_until"], unique=False)
