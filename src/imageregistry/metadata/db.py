"""Transactions and the resourceVersion sequence shared by every metadata query module.

`Database` wraps an engine with two context managers: `read()` for consistent reads and
`write()` for transactions that change rows. On SQLite a write transaction starts with
BEGIN IMMEDIATE so writers queue instead of deadlocking on lock upgrades. `record_change`
appends to the `changes` log; the returned id is the new resourceVersion of the object.

A database that refuses a write for a reason the client cannot fix is never a bare driver
error: `write()` raises `DatabaseReadOnly` when the database takes no writes at all (a
SQLite file opened or made read-only, PostgreSQL with `default_transaction_read_only` or a
hot standby) and `DatabaseBusy` when the write lost a conflict (a PostgreSQL serialization
failure or deadlock, SQLite still locked after its busy timeout). Both are
`DatabaseUnavailable`, which the HTTP layers answer with `503` (and `Retry-After` for a
conflict) instead of `500`. `transaction()` retries a conflicted transaction as a whole.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.exc import DBAPIError

from imageregistry.clock import system_clock
from imageregistry.metadata.tables import changes

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs of PostgreSQL: the transaction is read-only (also every transaction on a hot
# standby), and the two conflicts the server resolves by aborting one transaction.
_PG_READ_ONLY = frozenset({"25006"})
_PG_CONFLICT = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_SQLITE_READONLY, _SQLITE_BUSY, _SQLITE_LOCKED = 8, 5, 6  # primary result codes
TRANSACTION_ATTEMPTS = 4


class DatabaseUnavailable(Exception):
    """The database did not take this write; nothing was changed and the client may retry."""

    retry_after: int | None = None


class DatabaseReadOnly(DatabaseUnavailable):
    """The database takes no writes (read-only file, read-only transaction, hot standby)."""

    def __init__(self) -> None:
        super().__init__(
            "the registry database is read-only: pulls and reads are served,"
            " pushes and other changes are refused until it accepts writes again"
        )


class DatabaseBusy(DatabaseUnavailable):
    """A write lost a conflict with concurrent writes more often than it was retried."""

    retry_after = 1

    def __init__(self) -> None:
        super().__init__("the registry database is busy with concurrent changes; retry the request")


def refusal(exc: DBAPIError) -> type[DatabaseUnavailable] | None:
    """Which refusal a driver error is, or None when it is some other failure."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        if sqlstate in _PG_READ_ONLY:
            return DatabaseReadOnly
        return DatabaseBusy if sqlstate in _PG_CONFLICT else None
    code = getattr(orig, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = int(code) & 0xFF  # extended codes keep the primary one in the low byte
    if primary == _SQLITE_READONLY:
        return DatabaseReadOnly
    return DatabaseBusy if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) else None


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Database:
    """An engine plus the transaction conventions of this project."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._refusing = False  # a read-only refusal was logged and no write succeeded since

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; a refused one raises `DatabaseUnavailable` (rolled back)."""
        with self._write(report=True) as conn:
            yield conn

    @contextmanager
    def _write(self, *, report: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn = conn.execution_options(sqlite_immediate=True)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            kind = refusal(exc)
            if kind is None:
                raise
            if kind is DatabaseReadOnly and report and not self._refusing:
                self._refusing = True
                log.warning("the database refused a write: it is read-only (%s)", exc.orig)
            raise kind() from exc
        self._refusing = False

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` in a write transaction, run again from the start when it loses a
        conflict on PostgreSQL (up to `TRANSACTION_ATTEMPTS` times, with a short random
        pause between); what still fails raises `DatabaseBusy` (503 with Retry-After).

        Idempotent by construction: a conflict rolls the whole transaction back, so every
        attempt starts from what is committed; `work` must therefore keep its effects to
        `conn` (no blob writes, no in-memory state carried from one attempt to the next).
        """
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                with self.write() as conn:
                    return work(conn)
            except DatabaseBusy:
                # SQLite answers busy only after its 30 s busy timeout: no point waiting more.
                if attempt == TRANSACTION_ATTEMPTS or self.is_sqlite:
                    raise
                log.info("write conflict, retrying the transaction (attempt %d)", attempt)
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    def refuses_writes(self) -> bool:
        """Whether the database takes no writes now (asked once at start-up): a statement
        that changes nothing is still refused by a read-only SQLite file and inside a
        PostgreSQL read-only transaction, so it probes without changing anything."""
        try:
            with self._write(report=False) as conn:
                conn.execute(text("UPDATE settings SET value = value WHERE 1 = 0"))
        except DatabaseReadOnly:
            return True
        return False

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
            resource=resource, namespace=namespace, name=name, event=event, at=system_clock()
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
