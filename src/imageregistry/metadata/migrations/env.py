"""Alembic environment: runs migrations on the connection handed in by `engine.migrate`."""

from __future__ import annotations

from alembic import context

from imageregistry.metadata.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic path is supported
    raise RuntimeError("run migrations through imageregistry.metadata.engine.migrate")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
