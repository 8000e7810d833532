"""refresh tokens of the registry token endpoint

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refresh_tokens",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=253), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("idp", sa.String(length=32), nullable=False),
        sa.Column("sa_namespace", sa.String(length=253), nullable=False),
        sa.Column("sa_name", sa.String(length=253), nullable=False),
        sa.Column("sa_uid", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=253), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256"),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_refresh_tokens_username", ["username"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_refresh_tokens_username")
    op.drop_table("refresh_tokens")
