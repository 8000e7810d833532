"""Write conflicts on a real PostgreSQL are retried, or answered as retryable, never 500
.

The soak's one `manifest 500` came from a lost deadlock: a push locks the blob rows it
references in digest order while GC's sweep deleted rows in the order it found them on
disk, so each could hold a row the other wanted and PostgreSQL aborted one transaction.
Here another connection plays the sweep's part and closes the same cycle with a push.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from imageregistry.metadata.db import Database, DatabaseBusy
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import BlobRef, ManifestMetadata, NewManifest
from imageregistry.metadata.tables import blobs
from imageregistry.oci.errors import from_domain
from tests.support.postgres import create_database

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REPO = RepoKey("team", "app")
CFG = "sha256:" + "c" * 64
L1 = "sha256:" + "1" * 64
L2 = "sha256:" + "2" * 64


@pytest.fixture
def db(postgres_server: str) -> Iterator[Database]:
    database = Database(
        open_engine(create_database(postgres_server, f"dl_{uuid.uuid4().hex[:10]}"))
    )
    yield database
    database.dispose()


def manifest() -> NewManifest:
    refs = (
        BlobRef(-1, CFG, 10, "application/vnd.oci.image.config.v1+json"),
        BlobRef(0, L1, 100, "application/vnd.oci.image.layer.v1.tar"),
        BlobRef(1, L2, 100, "application/vnd.oci.image.layer.v1.tar"),
    )
    return NewManifest(
        digest="sha256:" + "a" * 64,
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=b"{}",
        created=NOW,
        blobs=refs,
        config_digest=CFG,
    )


def wait_for_a_lock_wait(db: Database) -> None:
    """Until a backend of this database waits for a row lock (the push, blocked)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.read() as conn:
            if conn.execute(query).scalar_one() > 0:
                return
        time.sleep(0.05)
    raise AssertionError("the push never waited for the lock")


def test_a_push_that_loses_a_deadlock_is_retried_and_recorded(db: Database) -> None:
    meta, mans = RegistryMetadata(db), ManifestMetadata(db)
    for digest in (CFG, L1, L2):
        meta.record_blob(REPO, digest, 10 if digest == CFG else 100, NOW, may_create_ns=True)
    first, last = min(CFG, L1, L2), max(CFG, L1, L2)  # the push locks them in this order
    outcome: dict[str, BaseException | None] = {}

    def push() -> None:
        try:
            mans.record(REPO, manifest(), "v1", NOW, True)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    with db.engine.connect() as sweep:
        transaction = sweep.begin()
        # The push's own backend finds the cycle (after the default 1 s); this one waits.
        sweep.execute(text("SET LOCAL deadlock_timeout = '60s'"))
        lock = select(blobs.c.digest).with_for_update()
        sweep.execute(lock.where(blobs.c.digest == last)).all()
        pusher = threading.Thread(target=push)
        pusher.start()
        wait_for_a_lock_wait(db)  # the push holds `first` and waits for `last`
        sweep.execute(lock.where(blobs.c.digest == first)).all()  # the cycle closes
        transaction.commit()
    pusher.join(timeout=120)
    assert not pusher.is_alive()
    assert outcome["error"] is None, repr(outcome["error"])
    assert mans.get(REPO, None, "v1").digest == manifest().digest


def test_a_conflict_that_outlasts_the_retries_is_a_retryable_503() -> None:
    mapped = from_domain(DatabaseBusy())
    assert mapped is not None
    assert mapped.status == 503 and mapped.code == "UNAVAILABLE"
    assert mapped.headers["Retry-After"] == "1"
    assert "retry" in mapped.message
