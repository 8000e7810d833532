"""Transactions and the resourceVersion sequence shared by every metadata query module.

`Database` wraps an engine with two context managers: `read()` for consistent reads and
`write()` for transactions that change rows. On SQLite a write transaction starts with
BEGIN IMMEDIATE so writers queue instead of deadlocking on lock upgrades. `record_change`
appends to the `changes` log; the returned id is the new resourceVersion of the object.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert

from imageregistry.metadata.tables import changes


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Database:
    """An engine plus the transaction conventions of this project."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    def fetch_one_raw(self, sql: str, params: tuple[object, ...] = ()) -> Any:
        """One row of a read-only statement on a pooled DBAPI connection, skipping
        SQLAlchemy's per-statement work (the hot read paths: pulls, RBAC versions)."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, params)
                row = cursor.fetchone()
            finally:
                cursor.close()
            if not self.is_sqlite:
                raw.rollback()  # psycopg opened a transaction for the SELECT
        finally:
            raw.close()
        return row

    def dispose(self) -> None:
        self.engine.dispose()


def record_change(conn: Connection, resource: str, namespace: str, name: str, event: str) -> int:
    """Append to the change log and return the new resourceVersion."""
    result = conn.execute(
        insert(changes).values(
            resource=resource, namespace=namespace, name=name, event=event, at=utcnow()
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
