"""Which process is appending to (or committing) an upload session right now.

A chunked upload may continue on any replica, so two requests for the same session can
reach two processes at once (a client retrying while its first request still streams,
or a misbehaving one). Each would see the same offset, stage its bytes there and report
success: one of the two chunks is lost, and the digest another process hashed may no longer
describe the staged bytes. A storage driver whose staging is shared between processes
(object storage) therefore holds the session's lock while an append or a commit runs; a
second request finds it held and is refused (``UploadInProgress``, 409) without touching
anything (docs/architecture.md#built-for-several-replicas).

The lock must let go when its holder dies, or a client could not finish its upload on
another replica after one was killed mid-chunk. Hence no row with an expiry:

- **PostgreSQL**: a session-level advisory lock (``pg_advisory_lock``, waiting at most
  ``_WAIT_MS``) on a connection held for the duration of the append. The connection
  comes from a pool of its own, so uploads streaming for minutes never starve the
  request path's pool; the lock ends with the connection, i.e. when PostgreSQL sees the
  holding process's socket close (a moment after it dies, hence the short wait).
- **SQLite**: every process sharing the database runs on its host, so a POSIX record lock
  on one byte of a lock file beside the database (one byte per session, by hash), which
  the kernel drops with the process. Record locks do not exclude threads of one process;
  the driver's in-process claim does that.
- An in-memory SQLite database has one process by definition: no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from imageregistry.metadata.db import Database, DatabaseBusy

Release = Callable[[], None]

# The two-key form of the advisory lock, with this first key, keeps these locks apart
# from the single-key transaction locks of the upload caps (``_lock_owner``).
_LOCK_CLASS = 0x75706C64  # "upld"
# How long a request waits for a held session before it is refused. A holder that was
# killed is noticed by PostgreSQL only once its backend reads the closed socket, a moment
# after the process is gone: the client retrying on another replica should not see the
# dead holder's lock.
_WAIT_MS = 2000
_LOCK_NOT_AVAILABLE = "55P03"
# Connections kept open for upload locks when idle, and at most this many more while
# appends run (each running append holds one).
_POOL_SIZE = 2
_POOL_OVERFLOW = 62
# How long an append waits for a free connection when that many already stream; then
# the request is answered 503 with Retry-After (``DatabaseBusy``), not left hanging.
_POOL_TIMEOUT_SECONDS = 10


class UploadLocks:
    """``try_acquire(upload_id)``: a release function, or None when another process
    holds the session. Blocking (database round trips): call it from a thread."""

    def __init__(
        self,
        db: Database,
        *,
        pool_size: int = _POOL_SIZE,
        pool_overflow: int = _POOL_OVERFLOW,
        pool_timeout: float = _POOL_TIMEOUT_SECONDS,
    ) -> None:
        url = db.engine.url
        self._engine: Engine | None = None
        self._file: Path | None = None
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        if db.is_sqlite:
            if url.database and url.database != ":memory:":
                self._file = Path(url.database + ".upload-locks")
        else:
            self._engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_overflow,
                pool_timeout=pool_timeout,
                pool_pre_ping=True,
            )

    def try_acquire(self, upload_id: str) -> Release | None:
        if self._engine is not None:
            return self._advisory(self._engine, upload_id)
        if self._file is not None:
            return self._record(upload_id)
        return lambda: None

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _advisory(engine: Engine, upload_id: str) -> Release | None:
        try:
            conn = engine.connect()
        except PoolTimeout:  # every lock connection is held by a streaming append
            raise DatabaseBusy() from None
        key = {"c": _LOCK_CLASS, "k": upload_id}
        try:
            conn.execute(text(f"SET lock_timeout = '{_WAIT_MS}ms'"))
            conn.execute(text("SELECT pg_advisory_lock(:c, hashtext(:k))"), key)
            conn.commit()  # no transaction left open while the append streams
        except DBAPIError as exc:
            conn.rollback()
            conn.close()
            if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                return None
            raise
        except BaseException:
            conn.invalidate()
            conn.close()
            raise

        def release() -> None:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:c, hashtext(:k))"), key)
                conn.commit()
            except Exception:
                # Closing the session releases the lock in any case: never pool it.
                conn.invalidate()
            finally:
                conn.close()

        return release

    def _record(self, upload_id: str) -> Release | None:
        fd = self._lock_fd()
        offset = int.from_bytes(hashlib.sha256(upload_id.encode()).digest()[:6], "big")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:  # EAGAIN/EACCES: another process holds it
            return None

        def release() -> None:
            with contextlib.suppress(OSError):
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

        return release

    def _lock_fd(self) -> int:
        # One descriptor for the process's lifetime: closing any descriptor of the file
        # would drop every record lock this process holds on it.
        with self._fd_lock:
            if self._fd is None:
                assert self._file is not None
                self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o600)
            return self._fd
