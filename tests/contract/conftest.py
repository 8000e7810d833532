"""The metadata database every contract suite runs against: SQLite in a temp dir and a
throwaway database on the session's PostgreSQL. A module that needs more (seed rows, a
second engine) defines its own `db` fixture, which takes precedence over this one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from tests.support.postgres import fresh_database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    database = Database(open_engine(fresh_database_url(request, tmp_path, request.param)))
    yield database
    database.dispose()
