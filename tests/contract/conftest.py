"""The metadata database every contract suite runs against: SQLite in a temp dir and a
throwaway database on the session's PostgreSQL. A module that needs more (seed rows, a
second engine) defines its own `db` fixture, which takes precedence over this one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from tests.support.postgres import create_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'meta.db'}"
    else:
        server: str = request.getfixturevalue("postgres_server")
        url = create_database(server, f"contract_{uuid.uuid4().hex[:12]}")
    database = Database(open_engine(url))
    yield database
    database.dispose()
