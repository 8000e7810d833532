"""The migrations form one chain whose head is the schema `metadata.tables` describes.

Several engineers add migrations in parallel; two files with the same revision id or the
same parent leave alembic with no single head and the server cannot start.
"""

from __future__ import annotations

import ast
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from imageregistry.metadata.engine import MIGRATIONS, open_engine
from imageregistry.metadata.tables import metadata


def _revisions() -> dict[str, str | None]:
    """revision -> down_revision, read from the files (alembic would refuse duplicates)."""
    found: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        values: dict[str, str | None] = {}
        for node in ast.parse(path.read_text()).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), path
                value = node.value.value
                assert value is None or isinstance(value, str), path
                values[target.id] = value
        revision = values["revision"]
        assert isinstance(revision, str), path
        assert revision not in found, f"{path.name}: revision {revision!r} is used twice"
        found[revision] = values.get("down_revision")
    return found


def test_migrations_are_one_chain() -> None:
    chain = _revisions()
    parents = [p for p in chain.values() if p is not None]
    assert len(parents) == len(set(parents)), f"two migrations share a parent: {chain}"
    assert [r for r, p in chain.items() if p is None] == ["0001"]
    assert all(p in chain for p in parents), chain


def test_the_migrated_schema_is_the_declared_one(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
