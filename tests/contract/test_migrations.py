"""Schema migrations over data written by the previous schema, on SQLite and PostgreSQL.

0003 turns each blob's `hold_until` (last reference + the grace of that time) into
`referenced`, keeping the old value: never earlier than the real reference, so no blob
becomes collectable sooner than before the upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, select, text

from imageregistry.metadata.db import as_utc
from imageregistry.metadata.engine import MIGRATIONS, create, migrate
from imageregistry.metadata.tables import blobs
from tests.support.postgres import fresh_database_url

HOLD = datetime(2025, 3, 1, 13, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    built = create(fresh_database_url(request, tmp_path, request.param))
    yield built
    built.dispose()


def _upgrade(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def test_blob_hold_becomes_the_reference_time(engine: Engine) -> None:
    _upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO blobs (digest, size, state, hold_until, created) "
                "VALUES ('sha256:aa', 5, 'present', :hold, :hold)"
            ),
            {"hold": HOLD},
        )
    migrate(engine)
    with engine.begin() as conn:
        row = conn.execute(select(blobs.c.digest, blobs.c.size, blobs.c.referenced)).one()
    assert (row.digest, row.size) == ("sha256:aa", 5)
    assert as_utc(row.referenced) == HOLD
