"""Upload-session locks (`metadata/upload_locks.py`) exclude other processes and die with
their holder, on a real PostgreSQL and on an SQLite file.

The S3 driver holds one while an append or commit runs, so that two replicas never stage
two chunks at the same offset of one upload; the lock must vanish the moment its holder
is killed, or a client could not finish on another replica (docs/operations.md,
"Several replicas").
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageregistry.metadata.db import Database, DatabaseBusy
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.upload_locks import UploadLocks
from tests.support.postgres import create_database

_HOLDER = textwrap.dedent(
    """
    import sys
    from imageregistry.metadata.db import Database, DatabaseBusy
    from imageregistry.metadata.engine import create
    from imageregistry.metadata.upload_locks import UploadLocks

    locks = UploadLocks(Database(create(sys.argv[1])))
    assert locks.try_acquire(sys.argv[2]) is not None
    print("held", flush=True)
    sys.stdin.read()  # until killed
    """
)


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        url = create_database(server, f"locks_{uuid.uuid4().hex[:10]}")
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    open_engine(url).dispose()  # the schema, as a serving registry has it
    yield url


def _locks(url: str) -> UploadLocks:
    return UploadLocks(Database(open_engine(url)))


def test_a_session_held_by_another_process_is_refused_until_that_process_dies(url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, "upload-1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    locks = _locks(url)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert locks.try_acquire("upload-1") is None
        other = locks.try_acquire("upload-2")  # other sessions are unaffected
        assert other is not None
        other()
        holder.kill()  # SIGKILL: nothing is released by the holder itself
        holder.wait(60)
        release = locks.try_acquire("upload-1")
        assert release is not None
        release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(60)
        locks.dispose()


def test_a_released_session_can_be_taken_again(url: str) -> None:
    first = _locks(url)
    try:
        release = first.try_acquire("upload-1")
        assert release is not None
        release()
        again = first.try_acquire("upload-1")
        assert again is not None
        again()
    finally:
        first.dispose()


def test_two_holders_in_one_process_exclude_each_other_on_postgresql(
    postgres_server: str,
) -> None:
    url = create_database(postgres_server, f"locks_{uuid.uuid4().hex[:10]}")
    first, second = _locks(url), _locks(url)
    try:
        release = first.try_acquire("upload-1")
        assert release is not None
        assert second.try_acquire("upload-1") is None
        release()
        taken = second.try_acquire("upload-1")
        assert taken is not None
        taken()
    finally:
        first.dispose()
        second.dispose()


def test_when_every_lock_connection_is_busy_the_request_is_told_to_retry(
    postgres_server: str,
) -> None:
    """More appends streaming into one process than its lock pool has connections: the
    next one is answered "busy, retry" (503 with Retry-After), never left hanging."""
    url = create_database(postgres_server, f"locks_{uuid.uuid4().hex[:10]}")
    locks = UploadLocks(Database(open_engine(url)), pool_size=1, pool_overflow=0, pool_timeout=0.5)
    try:
        release = locks.try_acquire("upload-1")
        assert release is not None
        with pytest.raises(DatabaseBusy) as refused:
            locks.try_acquire("upload-2")
        assert refused.value.retry_after
        release()
        again = locks.try_acquire("upload-2")
        assert again is not None
        again()
    finally:
        locks.dispose()
