"""Database engines for the metadata store: SQLite (embedded default) and PostgreSQL.

`open_engine` turns a URL into a configured SQLAlchemy engine and brings the schema to
the newest Alembic revision. SQLite runs in WAL mode with a busy timeout so several
worker processes can share one file; foreign keys are switched on per connection because
SQLite defaults them off. PostgreSQL URLs use psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, NullPool, create_engine, event, text

from imageregistry.configerror import ConfigurationError

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseConfigurationError(ConfigurationError):
    """The database URL names an unsupported backend."""


def normalize_url(url: str) -> str:
    """Map user-facing URLs onto SQLAlchemy dialect URLs (psycopg 3 for PostgreSQL)."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise DatabaseConfigurationError(
        f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:///PATH or postgresql://..."
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create(url: str) -> Engine:
    """Build an engine without touching the schema."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)

        # pysqlite's implicit transactions are disabled (see below) so that write
        # transactions can take the write lock up front with BEGIN IMMEDIATE: concurrent
        # writers then queue on busy_timeout instead of failing to upgrade a read lock.
        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        engine.dialect.supports_native_enum = False
        _disable_pysqlite_autobegin(engine)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _disable_pysqlite_autobegin(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None


# pg_advisory_lock key of the start-up preparation ("imgregv2" as a 64-bit integer).
PREPARATION_LOCK = 0x696D677265677632


@contextmanager
def preparation_lock(url: str) -> Iterator[None]:
    """Hold a database-wide lock while one server prepares the database (migrations,
    bootstrap objects), so replicas started together on one PostgreSQL database prepare
    one after the other instead of racing to create the same tables and rows (the second
    would fail with a duplicate and its pod restart). A session-level advisory lock: it
    goes with the connection if the process dies. SQLite serves one machine's processes,
    whose `serve` commands do not start together: no lock."""
    url = normalize_url(url)
    if not url.startswith("postgresql"):
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PREPARATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PREPARATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision (idempotent)."""
    # Imported here: only the `serve` preparation step migrates, so worker processes
    # never pay alembic's import cost (~11 MB each).
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def open_engine(url: str) -> Engine:
    """Engine with the schema migrated to head."""
    engine = create(url)
    migrate(engine)
    return engine
