"""The `ac adm top` queries give the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import normalize_url, open_engine
from tests.unit.metadata.test_usage import check_images, check_namespace, check_streams


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(open_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
        yield database
        database.dispose()
        return
    server: str = request.getfixturevalue("postgres_server")
    name = "usage_" + uuid.uuid4().hex[:12]
    root = create_engine(normalize_url(server), isolation_level="AUTOCOMMIT")
    with root.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_url(server).rsplit("/", 1)[0] + "/" + name
    database = Database(open_engine(url))
    yield database
    database.dispose()
    with root.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}"'))
    root.dispose()


def test_images(db: Database) -> None:
    check_images(db)


def test_streams(db: Database) -> None:
    check_streams(db)


def test_namespace(db: Database) -> None:
    check_namespace(db)
