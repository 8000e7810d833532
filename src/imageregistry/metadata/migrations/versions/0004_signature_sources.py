"""signatures remember the pushed manifest they were recorded from

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 20:45:00

A cosign signature recorded from a pushed signature manifest is removed with that manifest:
`source_repository_id` + `source_manifest` reference the manifest's link to the repository it
was pushed to, ON DELETE CASCADE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signatures", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "source_repository_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("source_manifest", sa.String(length=140), nullable=True))
        batch_op.create_foreign_key(
            "fk_signatures_source",
            "repository_manifests",
            ["source_repository_id", "source_manifest"],
            ["repository_id", "digest"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            "ix_signatures_source", ["source_repository_id", "source_manifest"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("signatures", schema=None) as batch_op:
        batch_op.drop_index("ix_signatures_source")
        batch_op.drop_constraint("fk_signatures_source", type_="foreignkey")
        batch_op.drop_column("source_manifest")
        batch_op.drop_column("source_repository_id")
